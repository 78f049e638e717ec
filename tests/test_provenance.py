"""A stored run names the code it was computed from: refused from uncommitted code under shared/,
unless asked for, and then with the diff beside it (shared.provenance.code_version)."""
import math
import subprocess
from dataclasses import dataclass

import pytest

from shared import provenance as results
from shared.provenance import ALLOW_DIRTY, DIFF_FILE, UncommittedCodeError, code_version, git_commit
from shared.results import Store
from helpers import context, get_or_compute, put


@dataclass(frozen=True)
class Unit:
    a: int = 1


CFG = Unit()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with a committed shared/ package, standing in for the project's."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "code.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("hello\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    monkeypatch.delenv(ALLOW_DIRTY, raising=False)
    return tmp_path


def test_only_changes_to_the_code_make_a_tree_dirty(repo):
    assert not git_commit().endswith("+dirty") and code_version().diff is None
    (repo / "README.md").write_text("changed\n")   # prose, results, notebooks: not the code
    assert not git_commit().endswith("+dirty")
    (repo / "shared" / "code.py").write_text("x = 2\n")
    assert git_commit().endswith("+dirty")


def test_uncommitted_code_is_refused_naming_the_files_and_the_way_out(repo):
    (repo / "shared" / "code.py").write_text("x = 2\n")
    (repo / "shared" / "new.py").write_text("y = 3\n")  # untracked code counts too
    with pytest.raises(UncommittedCodeError, match=r"shared/code\.py, shared/new\.py.*BN_ALLOW_DIRTY=1"):
        code_version()


def test_with_the_override_the_diff_is_stored_beside_the_run(repo, tmp_path_factory, monkeypatch):
    (repo / "shared" / "code.py").write_text("x = 2\n")
    (repo / "shared" / "new.py").write_text("y = 3\n")
    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    computed = []
    with pytest.raises(UncommittedCodeError):  # refused before computing: compute() never runs
        get_or_compute(store, "unit", CFG, 0, lambda: computed.append(1) or {"x": 1}, "cpu")
    assert not computed and store.get("unit", CFG, 0) is None
    monkeypatch.setenv(ALLOW_DIRTY, "1")
    run = get_or_compute(store, "unit", CFG, 0, lambda: {"x": 1}, "cpu")
    assert run.provenance["git_commit"].endswith("+dirty") and run.provenance["code_diff"] == DIFF_FILE
    diff = (store.run_dir("unit", CFG, 0) / DIFF_FILE).read_text()
    assert "+x = 2" in diff and "-x = 1" in diff and "+y = 3" in diff


def test_a_run_from_committed_code_has_no_diff(repo, tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    run = get_or_compute(store, "unit", CFG, 0, lambda: {"x": 1}, "cpu")
    assert "code_diff" not in run.provenance and not run.provenance["git_commit"].endswith("+dirty")
    assert not (store.run_dir("unit", CFG, 0) / DIFF_FILE).exists()


def test_the_report_counts_the_runs_of_uncommitted_code():
    from shared.report import dirty_summary
    runs = [{"experiment": "fig2", "git_commit": "abc+dirty"}, {"experiment": "fig2", "git_commit": "abc"},
            {"experiment": "training", "git_commit": "def+dirty", "code_diff": DIFF_FILE}]
    line = dirty_summary(runs)
    assert line.startswith("2 of the 3 runs were computed from code with uncommitted changes ('+dirty': "
                           "1 of `fig2`, 1 of `training`); 1 of them keep the diff")
    assert dirty_summary(runs[1:2]) == "Every run was computed from committed code."


def test_a_run_with_its_code_not_on_record_is_rerun_from_committed_code(repo, tmp_path_factory):
    """shared.rerun: a "+dirty" run without a diff is found, recomputed from the (clean, committed)
    code, replaced, and its numbers compared: Fig 7's are a function of the seed, so nothing moves."""
    from shared import rerun
    from shared.compute import RunContext
    from shared.experiments import experiment_config, run_experiment
    from shared.fileio import read_json
    from shared.results import write_json

    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    cfg = experiment_config("fig7_singular_values", "smoke")
    for seed in (0, 1):
        run_experiment("fig7_singular_values", cfg, seed, RunContext(store))
    path = store.run_dir("fig7_singular_values", cfg, 1) / "provenance.json"
    write_json(path, {**read_json(path), "git_commit": "0123abc+dirty"})  # as stored before the refusal
    assert [(c, s) for c, s, _ in rerun.unrecorded("fig7_singular_values", store)] == [(cfg, 1)]
    assert rerun.rerun("fig7_singular_values", store=store, log=lambda line: None) == [rerun.Change(0.0, 0.0, 0.0, 0, 0)]
    assert rerun.unrecorded("fig7_singular_values", store) == []
    assert read_json(path)["git_commit"] == git_commit()


def test_several_rerun_processes_share_the_work(repo, tmp_path_factory):
    """shared.rerun.rerun_one: a run that another process has claimed is left to it, and so is one
    whose code is on record by the time it is claimed (re-run since the list was made); the longest
    run is listed first, so that processes started together balance."""
    from shared import rerun
    from shared.compute import RunContext
    from shared.experiments import experiment_config, run_experiment
    from shared.fileio import read_json
    from shared.results import write_json

    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    cfg = experiment_config("fig7_singular_values", "smoke")
    paths = {}
    for seed, seconds in ((0, 5.0), (1, 9.0)):
        run_experiment("fig7_singular_values", cfg, seed, RunContext(store))
        paths[seed] = store.run_dir("fig7_singular_values", cfg, seed) / "provenance.json"
        write_json(paths[seed], {**read_json(paths[seed]), "git_commit": "0123abc+dirty", "duration_s": seconds})
    found = rerun.unrecorded("fig7_singular_values", store)
    assert [s for _, s, _ in found] == [1, 0]
    (_, _, old1), (_, _, old0) = found
    with store.lock("fig7_singular_values", cfg, 1, wait=False, suffix=".rerun") as claim:  # another process's
        assert claim is not None
        assert rerun.rerun_one("fig7_singular_values", cfg, 1, old1, store=store) is None
        assert read_json(paths[1])["git_commit"].endswith("+dirty")  # left alone
        assert rerun.rerun("fig7_singular_values", store=store, log=lambda line: None) == [rerun.Change(0.0, 0.0, 0.0, 0, 0)]
    assert [s for _, s, _ in rerun.unrecorded("fig7_singular_values", store)] == [1]
    assert rerun.rerun_one("fig7_singular_values", cfg, 0, old0, store=store) is None  # re-run meanwhile
    assert rerun.rerun_one("fig7_singular_values", cfg, 1, old1, store=store) == rerun.Change(0.0, 0.0, 0.0, 0, 0)
    assert rerun.unrecorded("fig7_singular_values", store) == []


def test_a_config_is_described_by_what_differs_from_the_defaults():
    from shared.config import TrainConfig
    from shared.rerun import describe
    assert describe(TrainConfig()) == ""
    assert describe(TrainConfig(arch="resnet32", bn=False, lr=0.003)) == "arch='resnet32', bn=False, lr=0.003"


def test_a_change_is_measured_number_by_number():
    from shared.rerun import Change, change, numbers
    assert numbers({"a": [1, None, {"b": 2.5}], "c": "text", "d": True, "wall_s": 3.0}).keys() == {"/a/0", "/a/1", "/a/2/b"}
    assert change({"a": [1.0, None]}, {"a": [1.0, None]}) == Change(0.0, 0.0, 0.0, 0, 0)
    assert change({"a": [1.0, 4.0, 2.0]}, {"a": [1.0, 5.0, 2.0]}) == Change(0.0, 0.2, 1 / 3, 0, 0)
    assert change({"a": [1.0], "b": 1}, {"a": [1.0, 2.0]}) == Change(0.0, 0.0, 0.0, 1, 1)  # a field added, one gone
    assert change({"a": [None]}, {"a": [3.0]}).largest == math.inf


def test_a_training_run_with_its_code_not_on_record_is_retrained(repo, tmp_path_factory, tiny_image_folder):
    """shared.rerun on the training runs: retrained from the committed code into the same place,
    it gives the same numbers (training on a CPU is deterministic for a seed)."""
    from shared import rerun
    from shared.config import TRAINING_EXPERIMENT, train_config
    from shared.results import write_json
    from shared.fileio import read_json
    from shared.train import run_training

    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    cfg = train_config("smoke")
    run_training(cfg, 0, TRAINING_EXPERIMENT, context(store, tiny_image_folder))
    path = store.run_dir(TRAINING_EXPERIMENT, cfg, 0) / "provenance.json"
    write_json(path, {**read_json(path), "git_commit": "0123abc+dirty"})
    assert rerun.unrecorded(TRAINING_EXPERIMENT, store, under_s=0.0) == []  # it took longer than that
    moved, = rerun.rerun(TRAINING_EXPERIMENT, tiny_image_folder, store, log=lambda line: None)
    assert moved == rerun.Change(0.0, 0.0, 0.0, 0, 0)
    assert rerun.unrecorded(TRAINING_EXPERIMENT, store) == []


@pytest.mark.parametrize("failure", ["no-git-folder", "dubious-ownership"])
def test_code_git_cannot_read_is_stored_with_its_hash_and_is_not_on_record(repo, tmp_path_factory, monkeypatch,
                                                                          failure):
    """Where git cannot tell the code's version (no .git, or git refusing a checkout another user
    owns), a run says "unknown" and stores a hash of the files under shared/; shared.rerun counts it
    as not on record."""
    import hashlib
    import shutil

    from shared import rerun
    from shared.config import TRAINING_EXPERIMENT, train_config

    if failure == "no-git-folder":
        shutil.rmtree(repo / ".git")
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(repo.parent))
    else:
        def dubious(*args, ok=(0,)):
            raise subprocess.CalledProcessError(128, ["git", *args], "", f"fatal: detected dubious ownership "
                                                                          f"in repository at '{repo}'")
        monkeypatch.setattr(results, "_git", dubious)
    expected = hashlib.sha256()
    for path in sorted((repo / "shared").rglob("*.py")):
        expected.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    code = code_version()
    assert (code.commit, code.diff, code.code_hash) == ("unknown", None, expected.hexdigest())
    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    cfg = train_config("smoke")
    run = get_or_compute(store, TRAINING_EXPERIMENT, cfg, 0, lambda: {"x": 1}, "cpu")
    assert run.provenance["git_commit"] == "unknown" and run.provenance["code_hash"] == expected.hexdigest()
    assert not rerun.on_record(run.provenance)
    assert rerun.unrecorded(TRAINING_EXPERIMENT, store) == [(cfg, 0, {"x": 1})]


def test_a_run_resumed_on_clean_code_keeps_the_diff_its_first_epochs_were_computed_with(
        repo, tmp_path_factory, monkeypatch, tiny_image_folder):
    """BN_ALLOW_DIRTY=1: a run trains its first epoch under an edit, is killed, the edit is reverted
    and the run resumed on the committed code. Its provenance lists both segments, and the first
    one's diff is stored beside the run; a segment computed from uncommitted code without its diff
    keeps a run off the record."""
    from shared import rerun
    from shared.config import train_config
    from shared.train import run_training, train

    from helpers import TINY

    store = Store(tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("ck"))
    cfg = train_config("smoke", epochs=2, max_epochs=2, **TINY)

    class Killed(Exception):
        pass

    def killed_after_first_epoch(*args, on_epoch_end=None, **kwargs):
        def hook(epochs_done):
            if epochs_done == 1:
                raise Killed
        return train(*args, on_epoch_end=hook, **kwargs)

    monkeypatch.setenv(ALLOW_DIRTY, "1")
    (repo / "shared" / "code.py").write_text("x = 2\n")
    monkeypatch.setattr("shared.train.runner.train", killed_after_first_epoch)
    with pytest.raises(Killed):
        run_training(cfg, 0, "unit", context(store, tiny_image_folder))
    monkeypatch.setattr("shared.train.runner.train", train)
    (repo / "shared" / "code.py").write_text("x = 1\n")  # the edit reverted
    run = run_training(cfg, 0, "unit", context(store, tiny_image_folder))
    prov, folder = run.provenance, store.run_dir("unit", cfg, 0)
    assert not prov["git_commit"].endswith("+dirty") and "code_diff" not in prov  # the fields as before
    first, last = prov["code_segments"]
    assert first["commit"] == prov["git_commit"] + "+dirty" and last == {"commit": prov["git_commit"]}
    diff = (folder / first["diff"]).read_text()
    assert "+x = 2" in diff and first["diff_sha256"] == hashlib_sha256(diff)
    assert "code_segments" not in run.result and rerun.on_record(prov, run.result)
    lost = {**prov, "code_segments": [{"commit": first["commit"]}, last]}  # its diff lost
    assert not rerun.on_record(lost, run.result)
    old = {k: v for k, v in prov.items() if k != "code_segments"}  # a run stored before segments were
    assert not rerun.on_record(old, {**run.result, "code": [first["commit"], last["commit"]]})
    assert rerun.on_record(old, {**run.result, "code": [last["commit"]]})


def hashlib_sha256(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()
