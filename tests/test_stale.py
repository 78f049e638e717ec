"""The store never serves a stale result nor overwrites one: the data is compared, runs trained
together are locked, an unwritable store fails before computing, damaged files are named."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from shared.config import train_config
from shared.report import load_runs
from shared.compute import OtherDataError, RunContext, config_runs, get_or_measure
from shared.results import Store
from shared.train import run_grid, run_together, run_training, train
from shared.train.__main__ import main
from helpers import TINY, context, get_or_compute, put

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def image_folder(root, seed: int, n_train: int = 2, n_test: int = 1):
    """A CIFAR-10-shaped image-folder tree of random PNGs drawn from `seed`."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def mean_pixel(data) -> dict:
    return {"mean": data.train_x.float().mean().item()}


def test_a_run_stored_from_one_copy_of_the_data_is_not_served_for_other_images(tmp_path):
    store = Store(tmp_path / "results", tmp_path / "ck")
    cfg = train_config("smoke", **TINY)
    one, other = image_folder(tmp_path / "one", 0), image_folder(tmp_path / "other", 1)
    first = get_or_measure("unit", cfg, 0, mean_pixel, RunContext(store, one, "cpu"))
    assert get_or_measure("unit", cfg, 0, mean_pixel, RunContext(store, one, "cpu")) == first  # same data: served
    with pytest.raises(OtherDataError, match=r"computed on other data \(image-folder tree one, pixels\+labels "
                                             r"sha256 [0-9a-f]+\) than the data dir holds now \(image-folder tree other"):
        get_or_measure("unit", cfg, 0, mean_pixel, RunContext(store, other, "cpu"))
    # where the data dir holds no copy there is nothing to compare: the stored run is what there is
    (tmp_path / "empty").mkdir()
    assert get_or_measure("unit", cfg, 0, lambda d: pytest.fail("computed"),
                          RunContext(store, tmp_path / "empty", "cpu")) == first
    # recomputing on purpose replaces it
    again = get_or_measure("unit", cfg, 0, mean_pixel, RunContext(store, other, "cpu", recompute=True))
    assert again.result != first.result and "image-folder tree other" in again.provenance["data"]


def test_a_stored_run_is_replaced_only_on_purpose(tmp_path):
    store = Store(tmp_path / "results", tmp_path / "ck")
    cfg = train_config("smoke")
    put(store, "unit", cfg, 0, {"x": 1}, "cpu", 1.0)
    with pytest.raises(FileExistsError, match="is stored already; it is replaced only when recomputed on purpose"):
        put(store, "unit", cfg, 0, {"x": 2}, "cpu", 1.0)
    assert put(store, "unit", cfg, 0, {"x": 2}, "cpu", 1.0, overwrite=True).result == {"x": 2}


def test_runs_trained_together_skip_a_run_another_process_holds(tmp_path, monkeypatch, tiny_image_folder):
    store = Store(tmp_path / "results", tmp_path / "ck")
    grid = [train_config("smoke", lr=lr, epochs=1, max_epochs=1, **TINY) for lr in (0.1, 0.01, 0.001)]
    trained = []
    real = run_together.__globals__["train_together"]
    monkeypatch.setattr("shared.train.runner.train_together",
                        lambda cfgs, *a, **k: trained.append([c.lr for c in cfgs]) or real(cfgs, *a, **k))
    with store.lock("grid", grid[1], 0):  # another process is training lr 0.01 (flock: per open file)
        run_together(grid, 0, "grid", context(store, tiny_image_folder))
        assert trained == [[0.1, 0.001]]
        assert store.get("grid", grid[1], 0) is None
        with store.lock("grid", grid[1], 0, wait=False) as taken:
            assert taken is None  # still held: a second taker does not wait for it
    run_together(grid, 0, "grid", context(store, tiny_image_folder))
    assert trained == [[0.1, 0.001], [0.01]]  # each run trained once
    run_together(grid, 0, "grid", context(store, tiny_image_folder))
    assert trained == [[0.1, 0.001], [0.01]] and not list((tmp_path / "ck").rglob("*.lock"))


def test_an_unwritable_store_fails_before_anything_is_computed(tmp_path, tiny_image_folder):
    (tmp_path / "results").write_text("a file where the store should be\n")
    store = Store(tmp_path / "results", tmp_path / "ck")
    cfg = train_config("smoke", epochs=1, max_epochs=1, **TINY)
    with pytest.raises(ValueError, match=f"the results store cannot be written at {tmp_path / 'results'}/unit"):
        get_or_compute(store, "unit", cfg, 0, lambda: pytest.fail("computed"), "cpu")
    with pytest.raises(ValueError, match="the results store cannot be written"):
        run_grid([cfg, cfg], 0, "unit", context(store, tiny_image_folder), together=2)
    assert not list(tmp_path.rglob("*.pt"))


def test_the_report_names_a_damaged_result_or_provenance(tmp_path):
    store = Store(tmp_path / "results", tmp_path / "ck")
    put(store, "unit", train_config("smoke"), 0, {"x": 1}, "cpu", 1.0)
    assert len(load_runs(tmp_path / "results")) == 1
    run = store.run_dir("unit", train_config("smoke"), 0)
    for name in ("result.json", "provenance.json"):
        text = (run / name).read_text()
        (run / name).write_text(text[:len(text) // 2])  # truncated
        with pytest.raises(ValueError, match=f"cannot read the stored file {run / name} .*delete its folder"):
            load_runs(tmp_path / "results")
        (run / name).write_text(text)


def test_a_resumed_runs_duration_covers_every_segment(tmp_path, monkeypatch, tiny_image_folder):
    store = Store(tmp_path / "results", tmp_path / "ck")
    cfg = train_config("smoke", epochs=2, max_epochs=2, **TINY)

    class Killed(Exception):
        pass

    def slow_first_epoch(*args, on_epoch_end=None, **kwargs):
        def hook(epochs_done):
            if epochs_done == 1:
                time.sleep(1.0)  # the first segment takes at least a second ...
                raise Killed     # ... and is killed after its checkpoint
        return train(*args, on_epoch_end=hook, **kwargs)

    monkeypatch.setattr("shared.train.runner.train", slow_first_epoch)
    with pytest.raises(Killed):
        run_training(cfg, 0, "unit", context(store, tiny_image_folder))
    monkeypatch.undo()
    first_segment = torch.load(store.checkpoint("unit", cfg, 0), weights_only=True)["runs"][0]["elapsed_s"]
    run = run_training(cfg, 0, "unit", context(store, tiny_image_folder))
    assert run.provenance["duration_s"] > first_segment > 0
    assert "earlier_segments_s" not in run.result


def test_seeds_given_as_a_number_are_a_clear_error():
    with pytest.raises(ValueError, match=r"seeds must be a list of non-negative ints .* got 3 \(int\); "
                                         r"for one seed write \[3\]"):
        config_runs("training", train_config("smoke"), 3)


@pytest.mark.parametrize("argv, message", [
    (["fig1", "--together", "-2"], "argument --together: a positive int, got '-2'"),
    (["fig1", "--together", "0"], "argument --together: a positive int, got '0'"),
    (["fig1", "--device", "gpu"], "argument --device: unknown device 'gpu'; valid here: cpu"),
])
def test_bad_training_command_values_are_one_line_naming_the_valid_ones(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
