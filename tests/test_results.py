import json
import multiprocessing as mp
import re

import pytest

from shared.config import train_config
from shared.plotting import runs_summary, stored_runs, training_title
from shared.results import Store, config_hash, write_json
from helpers import get_or_compute, put


def test_config_hash_is_stable_and_sensitive():
    a, b = train_config("smoke"), train_config("smoke")
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_hash(train_config("smoke", lr=0.05)) != config_hash(a)


def test_cached_run_stores_provenance_and_does_not_recompute(tmp_path):
    cfg, calls = train_config("smoke"), []

    def compute():
        calls.append(1)
        return {"value": 42}

    first = get_or_compute(Store(tmp_path, tmp_path / "ck"), "exp", cfg, 3, compute, "cpu", "test data")
    again = get_or_compute(Store(tmp_path, tmp_path / "ck"), "exp", cfg, 3, compute, "cpu")
    assert calls == [1] and again == first and first.result == {"value": 42}
    prov = first.provenance
    assert prov["seed"] == 3 and prov["config"]["arch"] == "resnet20" and prov["data"] == "test data"
    assert prov["config_hash"] == config_hash(cfg) and prov["precision"] == "fp32"
    for key in ("git_commit", "torch_version", "device", "date", "duration_s"):
        assert prov[key] not in (None, "")
    assert Store(tmp_path).run_dir("exp", cfg, 3) == tmp_path / "exp" / config_hash(cfg) / "seed3"
    get_or_compute(Store(tmp_path, tmp_path / "ck"), "exp", cfg, 3, compute, "cpu", recompute=True)
    assert calls == [1, 1]


@pytest.mark.parametrize("wait", [True, False])
def test_run_stored_by_another_process_after_the_first_look_is_not_computed(tmp_path, monkeypatch, wait):
    """The race a job launcher meets: the run is missing at the first look, and another process
    stores it before the lock is taken. It is never computed twice; without waiting, the caller
    is told it did not compute it (None), so that it does not count the run as its own."""
    cfg, store, looks, original_get = train_config("smoke"), Store(tmp_path, tmp_path / "ck"), [], Store.get

    def get_then_other_process_stores(self, *args):
        found = original_get(self, *args)
        if not looks:  # right after the first look
            looks.append(found)
            get_or_compute(Store(tmp_path, tmp_path / "ck"), "exp", cfg, 0, lambda: {"by": "other"}, "cpu")
        return found

    monkeypatch.setattr(Store, "get", get_then_other_process_stores)
    run = get_or_compute(store, "exp", cfg, 0, lambda: pytest.fail("computed twice"), "cpu", wait=wait)
    assert looks == [None] and ((run.result == {"by": "other"}) if wait else run is None)
    assert store.get("exp", cfg, 0).result == {"by": "other"}


def test_incomplete_run_is_not_loaded(tmp_path):
    cfg = train_config("smoke")
    write_json(Store(tmp_path).run_dir("exp", cfg, 0) / "provenance.json", {"seed": 0})
    assert Store(tmp_path).get("exp", cfg, 0) is None


def test_failed_compute_leaves_no_result(tmp_path):
    cfg = train_config("smoke")
    with pytest.raises(RuntimeError):
        get_or_compute(Store(tmp_path, tmp_path / "ck"), 
            "exp", cfg, 0, lambda: (_ for _ in ()).throw(RuntimeError("boom")), "cpu")
    assert Store(tmp_path).get("exp", cfg, 0) is None


def test_stored_runs_filters_on_config(tmp_path):
    for lr in (0.1, 0.01):
        for seed in (0, 1):
            get_or_compute(Store(tmp_path, tmp_path / "ck"), "exp", train_config("smoke", lr=lr), seed,
                                                            lambda: {"ok": True}, "cpu")
    assert len(Store(tmp_path).runs("exp")) == 4
    runs = Store(tmp_path).runs("exp", lr=0.01)
    assert sorted(r.provenance["seed"] for r in runs) == [0, 1]


def _store_many(args):
    root, seed = args
    cfg = train_config("smoke")
    for i in range(20):
        get_or_compute(Store(root, root / "ck"), 
            "exp", cfg, seed, lambda: {"seed": seed, "payload": list(range(2000)), "i": i}, "cpu", recompute=True)
    return seed


def test_two_processes_with_different_seeds_do_not_corrupt_each_other(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        assert sorted(pool.map(_store_many, [(tmp_path, 0), (tmp_path, 1)])) == [0, 1]
    for seed in (0, 1):
        run = Store(tmp_path).get("exp", train_config("smoke"), seed)
        assert run.result["seed"] == seed and run.result["i"] == 19
        assert run.provenance["seed"] == seed
    leftovers = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == []  # no temporary files left behind
    json.loads((Store(tmp_path).run_dir("exp", train_config("smoke"), 0) / "result.json").read_text())


def test_runs_summary_counts_runs_and_distinct_seeds(tmp_path):
    store = Store(tmp_path, tmp_path / "ck")
    runs = [get_or_compute(store, "exp", train_config("smoke", lr=lr), seed, lambda: {}, "cpu", "test data")
            for lr, seed in ((0.1, 0), (0.01, 0), (0.1, 1))]
    assert "preset smoke; 2 seed(s) [0, 1];" in runs_summary(runs[::2], "smoke")
    assert "preset smoke; 3 runs, seed(s) [0, 1];" in runs_summary(runs, "smoke")
    assert "data test data;" in runs_summary(runs, "smoke")
    assert runs_summary([], "cpu") == "preset cpu: no runs"
    # grouped as the figure modules hold them: by name, and as (config, runs) pairs
    grouped = {"a": runs[:1], "b": [(train_config("smoke"), runs[1:]), (train_config("smoke"), [])]}
    assert stored_runs(grouped) == runs and runs_summary(grouped, "smoke") == runs_summary(runs, "smoke")
    assert stored_runs(runs[0]) == [runs[0]] and stored_runs({"a": {}}) == []


def test_training_title_says_how_a_preset_is_reduced(tmp_path):
    cfg = train_config("preview")
    run = get_or_compute(Store(tmp_path, tmp_path / "ck"), "exp", cfg, 0, lambda: {}, "cpu")
    title = training_title(cfg, "preview", [run, run])
    assert title.startswith("resnet110, preview preset (reduced: 5,000-image training subset, "
                            "2,000-image test subset, 10 epochs); 1 seed(s); cpu")
    assert training_title(train_config("cpu"), "cpu", [run]).startswith(
        f"resnet110, cpu preset (reduced: {train_config('cpu').epochs} epochs, bf16); 1 seed(s)")
    assert "(paper protocol)" in training_title(train_config("paper"), "paper", [run])


@pytest.mark.parametrize("seed", [True, -1, "3", 1.0, None])
def test_a_seed_must_be_a_non_negative_int(seed, tmp_path):
    with pytest.raises(ValueError, match=rf"seed must be a non-negative int, got {re.escape(repr(seed))}"):
        Store(tmp_path).run_dir("exp", train_config("smoke"), seed)


def test_the_command_line_names_a_bad_seed_or_setting(capsys):
    from shared.experiments import main
    with pytest.raises(SystemExit):
        main(["fig7_singular_values", "--seeds", "abc"])
    assert "a seed is a non-negative int, got 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fig7_singular_values", "--set", "arch"])
    assert "--set takes FIELD=VALUE pairs, got 'arch'" in capsys.readouterr().err
    for setting, message in (("n=0", "SingularValueConfig.n must be positive, got 0"),
                             ("lr=nan", "DivergingUpdateConfig.lr must be a finite number, got nan (float)"),
                             ("lr=abc", "DivergingUpdateConfig.lr must be a finite number, got 'abc' (str)"),
                             ("lr=-1", "DivergingUpdateConfig.lr must be positive, got -1"),
                             ("m=1", "unknown DivergingUpdateConfig field 'm'; valid: arch")):
        experiment = "fig7_singular_values" if setting == "n=0" else "fig4_diverging_update"
        with pytest.raises(SystemExit):
            main([experiment, "--preset", "smoke", "--set", setting])
        assert message in capsys.readouterr().err


def test_a_figure_refuses_runs_computed_on_different_images(tmp_path, monkeypatch, tiny_image_folder):
    """The figures' read path (`config_runs`: every figure module's `load` reads through it; the
    store itself only keeps runs) serves the runs it returns only if they were computed on the same images as each other, and
    as the data dir holds where it holds a copy; a run that recorded no hash is served."""
    from shared.data import data_source
    from shared.compute import OtherDataError, config_runs

    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path / "results")
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setattr("shared.cifar_files.DEFAULT_DATA_DIR", tmp_path / "no-data-here")
    store, cfg = Store(tmp_path / "results", tmp_path / "ck"), train_config("smoke")
    one = "image-folder tree one, pixels+labels sha256 aaaaaaaaaaaa"
    other = "image-folder tree two, pixels+labels sha256 bbbbbbbbbbbb"
    for seed, data in ((0, one), (1, other), (2, None)):
        put(store, "unit", cfg, seed, {"seed": seed}, "cpu", 1.0, data)
    with pytest.raises(OtherDataError, match=r"different data.*seed0.*aaaaaaaaaaaa.*seed1.*bbbbbbbbbbbb"):
        config_runs("unit", cfg)
    assert [r.result["seed"] for r in config_runs("unit", cfg, seeds=[0, 2])] == [0, 2]  # one data, and none
    # the data dir holds a copy of other images than the runs were computed on
    monkeypatch.setenv("CIFAR10_DIR", str(tiny_image_folder))
    with pytest.raises(OtherDataError, match=r"seed0 was computed on other data .*aaaaaaaaaaaa"):
        config_runs("unit", cfg, seeds=[0, 2])
    put(store, "unit", cfg, 3, {"seed": 3}, "cpu", 1.0, data_source(tiny_image_folder))
    assert [r.result["seed"] for r in config_runs("unit", cfg, seeds=[2, 3])] == [2, 3]
