"""Launching grids as jobs (submitit): local and debug jobs store what training in-process stores,
workers spread over a grid through the run locks, a killed job's lock is taken over."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from helpers import TINY, context

from shared import launch as launching
from shared.config import train_config
from shared.launch import LaunchOptions, Run, TrainJob, format_status, grid_runs, launch, status
from shared.results import Store, StoredRun
from shared.train import run_grid, run_training, train
from shared.train.__main__ import main

EXPERIMENT = "training"


def smoke_grid(n: int = 2):
    return [train_config("smoke", lr=lr, epochs=1, max_epochs=1, **TINY) for lr in (0.1, 0.01, 0.001, 3e-4)[:n]]


def without_times(run: dict) -> dict:
    """A stored run less what differs between two computations of it (times, dates, processes)."""
    result = {**run.result, "metrics": [{k: v for k, v in m.items() if k != "wall_s"} for m in run.result["metrics"]]}
    prov = {k: v for k, v in run.provenance.items() if k not in ("date", "duration_s", "cpu")}
    return StoredRun(result, prov)


@pytest.mark.parametrize("launcher", ["debug", "local"])
def test_jobs_store_what_training_in_process_stores(launcher, tmp_path, tiny_image_folder):
    grid = smoke_grid(2)
    here = Store(tmp_path / "here", tmp_path / "ck-here")
    threads = torch.get_num_threads()
    if launcher == "local":  # as each of the 2 local workers has (summation order follows the threads)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        expected = [without_times(r) for r in run_grid(grid, 0, EXPERIMENT,
                                                                context(here, tiny_image_folder))]
    finally:
        torch.set_num_threads(threads)
    store = Store(tmp_path / "jobs-store", tmp_path / "ck-jobs")
    options = LaunchOptions(launcher, max_parallel=2, time_min=10, folder=tmp_path / "jobs")
    jobs = launch(grid_runs(grid, [0]), EXPERIMENT, options, context(store, tiny_image_folder))
    assert len(jobs) == 2
    assert sorted(sum((j.result()["trained"] for j in jobs), [])) == sorted(r.name() for r in grid_runs(grid, [0]))
    assert [without_times(store.get(EXPERIMENT, c, 0)) for c in grid] == expected
    assert status(grid_runs(grid, [0]), EXPERIMENT, store)["stored"] == [r.name() for r in grid_runs(grid, [0])]
    assert launch(grid_runs(grid, [0]), EXPERIMENT, options, context(store, tiny_image_folder)) == []


def test_two_workers_on_one_grid_train_different_runs(tmp_path, monkeypatch, tiny_image_folder):
    store = Store(tmp_path / "results", tmp_path / "ck")
    grid = smoke_grid(4)
    trained = {"a": [], "b": []}

    def slow_train(cfg, data, seed, *args, **kwargs):
        trained[threading.current_thread().name].append(cfg.lr)
        time.sleep(0.6)  # long enough for the other worker to find this run locked
        return train(cfg, data, seed, *args, **kwargs)

    monkeypatch.setattr("shared.train.runner.train", slow_train)
    start = threading.Barrier(2)

    def worker():
        start.wait()
        run_grid(grid, 0, EXPERIMENT, context(store, tiny_image_folder))

    threads = [threading.Thread(target=worker, name=name) for name in trained]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained["a"]) == len(trained["b"]) == 2  # each worker trained two runs ...
    assert sorted(trained["a"] + trained["b"]) == sorted(c.lr for c in grid)  # ... none twice
    assert all(store.get(EXPERIMENT, c, 0) is not None for c in grid)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from shared.config import train_config
from shared.results import Store
cfg = train_config("smoke", lr=0.1, epochs=1, max_epochs=1, arch="resnet20", batch_size=32, eval_batch_size=40,
                   train_subset=None, test_subset=None, steps_per_epoch=None)
store = Store(Path(sys.argv[1]), Path(sys.argv[2]))
with store.lock("training", cfg, 0):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_the_lock_of_a_killed_job_is_taken_over(tmp_path, tiny_image_folder):
    store = Store(tmp_path / "results", tmp_path / "ck")
    cfg = smoke_grid(1)[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.root), str(store.checkpoints)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert status([Run(cfg, 0)], EXPERIMENT, store)["running"] == [Run(cfg, 0).name()]
    assert run_training(cfg, 0, EXPERIMENT, context(store, tiny_image_folder, wait=False)) is None  # held: left to it
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert status([Run(cfg, 0)], EXPERIMENT, store)["missing"] == [Run(cfg, 0).name()]
    run = run_training(cfg, 0, EXPERIMENT, context(store, tiny_image_folder, wait=False))
    assert run is not None and run.result["status"] == "completed"
    assert not list((tmp_path / "ck").rglob("*.lock"))  # the taker removed the lock once stored


def test_a_failed_job_names_its_run_and_the_status_lists_it(tmp_path, monkeypatch, capsys, tiny_image_folder):
    store = Store(tmp_path / "results", tmp_path / "ck")
    grid = smoke_grid(2)

    def broken(cfg, *args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("shared.train.runner.train", broken)
    with pytest.raises(RuntimeError):
        TrainJob()([Run(grid[0], 0)], EXPERIMENT, context(store, tiny_image_folder))
    assert f"run {Run(grid[0], 0).name()} failed in job" in capsys.readouterr().out
    found = status(grid_runs(grid, [0]), EXPERIMENT, store)
    assert found["failed"] == [f"{Run(grid[0], 0).name()}: RuntimeError: out of memory"]
    assert found["missing"] == [Run(grid[1], 0).name()] and "failed: 1" in format_status(found)


def test_a_job_is_requeued_with_its_own_arguments(tmp_path):
    job = TrainJob()
    args = ([Run(smoke_grid(1)[0], 0)], EXPERIMENT, context(Store(tmp_path / "r", tmp_path / "c")))
    resubmission = job.checkpoint(*args)
    assert resubmission.function is job and resubmission.args == args


def test_the_training_command_launches_and_reports_status(tmp_path, monkeypatch, capsys, tiny_image_folder):
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr("shared.paths.CHECKPOINT_ROOT", tmp_path / "ck")
    monkeypatch.setattr(launching, "DATA_DIR", tmp_path)
    argv = ["divergence", "--preset", "smoke", "--seeds", "0", "--data-dir", str(tiny_image_folder), "--device", "cpu"]
    main(argv + ["--status"])
    assert "stored: 0\nrunning: 0\nfailed: 0\nmissing: 4" in capsys.readouterr().out
    main(argv + ["--launcher", "debug"])
    assert "4 debug jobs" in capsys.readouterr().out
    main(argv + ["--status"])
    assert "stored: 4\n" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(argv + ["--launcher", "pbs"])
    assert "invalid choice: 'pbs'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown launcher 'pbs'; valid: local, slurm, debug"):
        LaunchOptions("pbs")
