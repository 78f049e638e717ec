"""A run's life under faults: a training process killed with SIGKILL mid-epoch, during its
checkpoint write or during its result write resumes to the same result as an uninterrupted run;
damaged store files and checkpoints give one error naming the file and the way out; temp files
of interrupted writes and lock files do not accumulate."""

import json
import os
import subprocess
import sys
import time

import pytest

from shared.config import train_config
from shared.fileio import remove_stale_temps, write_atomic
from shared.results import Store
from helpers import context, get_or_compute, put

# Run in a subprocess: one smoke training run into the store at argv[1]; it SIGKILLs itself just
# before the argv[3]-th atomic rename onto a file named argv[2] ("-": never).
TRAIN = """
import os, signal, sys
from pathlib import Path
from shared.config import train_config
from shared.results import Store
from shared.compute import RunContext
from shared.train import run_training

root, target, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real_replace, calls = os.replace, [0]

def replace(src, dst):
    if Path(dst).name == target:
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = replace
cfg = train_config("smoke", epochs=3, max_epochs=3, steps_per_epoch=4)
run_training(cfg, 1, "fault", RunContext(Store(root / "results", root / "checkpoints"), sys.argv[4], "cpu",
                                         progress=False))
"""


def train_process(root, data, target="-", nth=0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", TRAIN, str(root), target, str(nth), str(data)],
                          capture_output=True, text=True, env=env, timeout=600)


def stored_result(root) -> dict:
    cfg = train_config("smoke", epochs=3, max_epochs=3, steps_per_epoch=4)
    run = Store(root / "results").get("fault", cfg, 1)
    assert run is not None, "the run was not stored"
    return {**run.result, "metrics": [{k: v for k, v in m.items() if k != "wall_s"} for m in run.result["metrics"]]}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_image_folder) -> dict:
    """The uninterrupted run's stored result."""
    root = tmp_path_factory.mktemp("straight")
    process = train_process(root, tiny_image_folder)
    assert process.returncode == 0, process.stderr[-2000:]
    return stored_result(root)


@pytest.mark.parametrize("target, nth", [("seed1.pt", 1), ("seed1.pt", 2), ("result.json", 1)],
                         ids=["first-checkpoint-write", "second-checkpoint-write", "result-write"])
def test_a_killed_training_process_resumes_to_the_uninterrupted_result(tmp_path, tiny_image_folder, straight,
                                                                      target, nth):
    killed = train_process(tmp_path / "killed", tiny_image_folder, target, nth)
    assert killed.returncode == -9, "the process was not killed where asked"
    resumed = train_process(tmp_path / "killed", tiny_image_folder)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stored_result(tmp_path / "killed") == straight
    leftovers = [p for p in (tmp_path / "killed").rglob("*") if p.is_file() and p.suffix in (".pt", ".lock")]
    assert not leftovers, f"a completed run leaves no checkpoint or lock: {leftovers}"


def test_a_damaged_result_names_its_file_and_the_way_out(tmp_path):
    cfg = train_config("smoke")
    store = Store(tmp_path, tmp_path / "ck")
    get_or_compute(store, "unit", cfg, 0, lambda: {"x": 1}, "cpu")
    path = store.run_dir("unit", cfg, 0) / "result.json"
    path.write_text(path.read_text()[:5])
    with pytest.raises(ValueError, match=r"result.json .*delete its folder .*seed0 to compute it again"):
        store.get("unit", cfg, 0)


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated zip", os.urandom(2000)], ids=["truncated", "random"])
def test_a_damaged_checkpoint_names_its_file_and_the_way_out(tmp_path, tiny_image_folder, content):
    from shared.train import run_training

    cfg = train_config("smoke", epochs=1, max_epochs=1, steps_per_epoch=2)
    store = Store(tmp_path / "results", tmp_path / "ck")
    path = store.checkpoint("unit", cfg, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"seed0.pt .*delete it to start these runs afresh") as error:
        run_training(cfg, 0, "unit", context(store, tiny_image_folder))
    assert "weights_only" not in str(error.value)


def test_stale_temp_files_are_removed_by_the_next_write_and_fresh_ones_kept(tmp_path):
    target = tmp_path / "result.json"
    stale, fresh = tmp_path / ".result.json.abc123", tmp_path / ".result.json.def456"
    stale.write_text("{")
    fresh.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    write_atomic(target, b"{}")
    assert target.read_text() == "{}" and not stale.exists() and fresh.exists()
    assert remove_stale_temps(target, older_than_s=-1) == [fresh]


def test_a_stored_run_leaves_no_lock_file(tmp_path):
    cfg = train_config("smoke")
    store = Store(tmp_path, tmp_path / "ck")
    get_or_compute(store, "unit", cfg, 0, lambda: {"x": 1}, "cpu")
    assert not list((tmp_path / "ck").rglob("*.lock"))
    assert json.loads((store.run_dir("unit", cfg, 0) / "result.json").read_text()) == {"x": 1}


def test_killed_three_times_the_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_image_folder, straight):
    """SIGKILL during the first checkpoint write, then during the next process's second one, then
    during the third process's result write: the fourth stores the uninterrupted result, and no
    checkpoint, lock or temp file of an interrupted write is left behind."""
    root = tmp_path / "killed"
    for target, nth in (("seed1.pt", 1), ("seed1.pt", 2), ("result.json", 1)):
        killed = train_process(root, tiny_image_folder, target, nth)
        assert killed.returncode == -9, f"the process was not killed at {target} write {nth}"
    resumed = train_process(root, tiny_image_folder)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stored_result(root) == straight
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert [n for n in names if n.endswith((".pt", ".lock")) or "/." in n] == [], names


def test_an_incomplete_provenance_names_its_file_and_the_way_out(tmp_path, tiny_image_folder):
    """A provenance.json without the keys a run is read by ({}, say) is not served nor counted: reading
    the run names the file and what to do, in the store, the training command and the report."""
    from shared.report import load_runs
    from shared.compute import RunContext, get_or_measure

    store, cfg = Store(tmp_path / "results", tmp_path / "ck"), train_config("smoke")
    get_or_compute(store, "unit", cfg, 0, lambda: {"x": 1}, "cpu")
    path = store.run_dir("unit", cfg, 0) / "provenance.json"
    path.write_text("{}")
    message = rf"{path} lacks .*config_hash.*delete its folder {store.run_dir('unit', cfg, 0)} .*compute it again"
    for read in (lambda: store.get("unit", cfg, 0), lambda: store.runs("unit"), lambda: load_runs(tmp_path / "results"),
                 lambda: get_or_measure("unit", cfg, 0, lambda data: pytest.fail("computed"),
                                        RunContext(store, tiny_image_folder, "cpu"))):
        with pytest.raises(ValueError, match=message):
            read()


def test_a_grid_resumed_with_another_together_says_how_to_resume(tmp_path, monkeypatch, tiny_image_folder):
    """A grid killed while training runs together (--together 2) and started again with --together 1
    would train them afresh and leave their group's checkpoint for good: it says, before training,
    where their progress is and how to resume it; started with the same --together, it resumes."""
    import shared.train.loop as T
    from helpers import TINY

    from shared.train import run_grid
    from shared.train.__main__ import main

    grid = [train_config("smoke", lr=lr, epochs=2, max_epochs=2, **TINY) for lr in (0.1, 0.01)]
    ctx = context(Store(tmp_path / "results", tmp_path / "ck"), tiny_image_folder)
    real_run_epoch, calls = T.run_epoch, []

    def killed_in_second_epoch(cfgs, runs, loaders, data, states, steps):
        if states[0].epoch == 1:
            raise KeyboardInterrupt
        return real_run_epoch(cfgs, runs, loaders, data, states, steps)

    monkeypatch.setattr(T, "run_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, 0, "grid", ctx, together=2)
    group = next((tmp_path / "ck").rglob("together-*/seed0.pt"))

    def counting(cfgs, *args):
        calls.append([c.lr for c in cfgs])
        return real_run_epoch(cfgs, *args)

    monkeypatch.setattr(T, "run_epoch", counting)
    with pytest.raises(ValueError, match=rf"'BN, lr 0.1' .*trained together with 1 other run.*--together 2 or more"
                                         rf".*epoch 1 of 2 in {group}.*delete {group.parent} to train"):
        run_grid(grid, 0, "grid", ctx, together=1)
    assert calls == []  # nothing trained afresh
    runs = run_grid(grid, 0, "grid", ctx, together=2)
    assert calls == [[0.1, 0.01]] and [len(r.result["metrics"]) for r in runs] == [2, 2]
    assert not group.exists()


def test_the_other_data_message_names_only_options_the_commands_take(tmp_path, tiny_image_folder):
    import re

    from shared.compute import OtherDataError, RunContext, get_or_measure
    from shared.train.__main__ import command_line

    store, cfg = Store(tmp_path / "results", tmp_path / "ck"), train_config("smoke")
    put(store, "unit", cfg, 0, {"x": 1}, "cpu", 1.0, "tree, pixels+labels sha256 000000000000")
    with pytest.raises(OtherDataError) as error:
        get_or_measure("unit", cfg, 0, lambda data: pytest.fail("computed"), RunContext(store, tiny_image_folder, "cpu"))
    options = {o for action in command_line()._actions for o in action.option_strings}
    named = set(re.findall(r"--[a-z][a-z-]*", str(error.value)))
    assert named <= options, f"the message names options `python -m shared.train` rejects: {named - options}"
    assert f"delete {store.run_dir('unit', cfg, 0)}" in str(error.value)


def test_the_status_lists_a_damaged_run_as_damaged(tmp_path):
    from shared.launch import Run, format_status, status

    store = Store(tmp_path / "results", tmp_path / "ck")
    cfgs = [train_config("smoke", lr=lr) for lr in (0.1, 0.01)]
    for cfg in cfgs:
        put(store, "training", cfg, 0, {"x": 1}, "cpu", 1.0)
    path = store.run_dir("training", cfgs[0], 0) / "result.json"
    path.write_text(path.read_text()[:5])  # truncated
    found = status([Run(c, 0) for c in cfgs], "training", store)
    assert found["stored"] == [Run(cfgs[1], 0).name()]
    damaged, = found["damaged"]
    assert damaged.startswith(Run(cfgs[0], 0).name()) and str(path) in damaged
    assert "damaged: 1" in format_status(found) and f"  damaged: {damaged}" in format_status(found)


@pytest.mark.parametrize("where", ["seed folder", "config folder"])
def test_a_file_where_a_runs_folder_should_be_fails_before_computing(tmp_path, where):
    store, cfg = Store(tmp_path / "results", tmp_path / "ck"), train_config("smoke")
    folder = store.run_dir("unit", cfg, 0) if where == "seed folder" else store.run_dir("unit", cfg, 0).parent
    folder.parent.mkdir(parents=True)
    folder.write_text("in the way\n")
    with pytest.raises(ValueError, match=rf"{folder} is a file where the run's folder should be; move or delete it"):
        get_or_compute(store, "unit", cfg, 0, lambda: pytest.fail("computed"), "cpu")


def test_an_unwritable_checkpoint_folder_fails_before_computing(tmp_path, monkeypatch):
    """The checkpoints (and locks) cannot be written: a clear error before computing, not a bare
    PermissionError (simulated: this test may run as root, whom permissions do not stop)."""
    from pathlib import Path

    store, cfg = Store(tmp_path / "results", tmp_path / "ck"), train_config("smoke")
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ck")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(ValueError, match=rf"the checkpoints cannot be written at {tmp_path / 'ck'}/unit.*"
                                         r"Permission denied.*\$BN_CHECKPOINT_DIR"):
        get_or_compute(store, "unit", cfg, 0, lambda: pytest.fail("computed"), "cpu")


def test_a_local_launch_leaves_no_empty_job_folder(tmp_path, tiny_image_folder):
    from helpers import TINY

    from shared.launch import LaunchOptions, Run, launch

    cfg = train_config("smoke", epochs=1, max_epochs=1, **TINY)
    options = LaunchOptions("local", max_parallel=1, time_min=10, folder=tmp_path / "jobs")
    jobs = launch([Run(cfg, 0)], "training", options, context(Store(tmp_path / "results", tmp_path / "ck"),
                                                              tiny_image_folder))
    assert len(jobs) == 1 and Store(tmp_path / "results").get("training", cfg, 0) is not None
    folders = sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir())
    assert folders == [jobs[0].job_id], folders
