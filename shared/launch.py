"""Training grids as jobs: SLURM job arrays, local worker processes or in-process debugging, via
submitit (the launcher of the PyTorch research ecosystem), into one shared results store.

A job trains runs of a grid (config x seed) into the store and exits. Taking a run is a
non-blocking lock (`Store.lock(wait=False)`): a job that finds a run locked, because another job
trains it, moves on; a lock is an flock, which the kernel releases when its holder dies, so the
lock of a killed job is free at once and its run resumes from its per-epoch checkpoint (the
`resume = uninterrupted` equivalence of `shared.train`). Nothing is trained twice or lost.

  slurm   one job per missing run, as a job array of at most `max_parallel` tasks at a time; jobs
          are `submitit.helpers.Checkpointable`: a job preempted or at its time limit is requeued
          and resumes its run from the last epoch's checkpoint. The command returns once the array
          is submitted; `--status` follows it, `make report` reads what it stored.
  local   `max_parallel` worker processes on this machine, each given every missing run (starting
          at its own), that spread over them through the locks; the command waits for them.
  debug   one job per run, run in this process one after another (submitit's DebugExecutor).

A run that fails is recorded beside its lock (`<run>.failed`: the job and the error) and named in
the job's log; `status` sorts a grid's runs into stored, running (locked), failed, missing and
damaged (a stored run whose files cannot be read).
"""

import os
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import submitit
import torch

from .compute import RunContext
from .config import TrainConfig, check_choice
from .fileio import read_json
from .paths import DATA_DIR
from .results import Store, write_json
from .train import run_training

LAUNCHERS = ("local", "slurm", "debug")
STATES = ("stored", "running", "failed", "missing", "damaged")


@dataclass(frozen=True)
class LaunchOptions:
    """How the jobs of a grid are launched (the SLURM fields are ignored by the other launchers)."""
    launcher: str = "local"
    max_parallel: int = 2            # jobs at once: SLURM array parallelism; local worker processes
    time_min: int = 24 * 60          # a job's time limit (SLURM requeues it from its checkpoint)
    partition: str | None = None     # SLURM partition (None: the cluster's default)
    gpus_per_job: int = 1            # SLURM; local jobs see the machine's GPUs, if any
    cpus_per_job: int = 8            # SLURM
    folder: Path = field(default_factory=lambda: DATA_DIR / "jobs")  # submitit's logs and pickles

    def __post_init__(self):
        check_choice("launcher", self.launcher, LAUNCHERS)
        for name in ("max_parallel", "time_min", "cpus_per_job"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.gpus_per_job < 0:
            raise ValueError(f"gpus_per_job must be >= 0, got {self.gpus_per_job!r}")


@dataclass(frozen=True)
class Run:
    """One run of a grid: a training config and a seed."""
    cfg: TrainConfig
    seed: int

    def name(self) -> str:
        c = self.cfg
        warmup = f", {c.warmup_epochs} warm-up epoch(s)" if c.warmup_epochs else ""
        return f"{c.arch} {'BN' if c.bn else 'no BN'} lr {c.lr:g} ({c.precision}{warmup}) seed {self.seed}"


def failure_path(store: Store, experiment: str, run: Run) -> Path:
    return store.checkpoint(experiment, run.cfg, run.seed).with_suffix(".failed")


class TrainJob(submitit.helpers.Checkpointable):
    """A job: train each of `runs` that is neither stored nor locked by another job, in order.
    Requeued after preemption or a time-out with the same arguments (submitit's default
    `checkpoint`), it resumes its run from the store's checkpoint."""

    def __call__(self, runs: list[Run], experiment: str, ctx: RunContext, threads: int | None = None) -> dict:
        if threads is not None:
            torch.set_num_threads(threads)
        store = ctx.store
        trained, skipped = [], []
        for run in runs:
            if store.get(experiment, run.cfg, run.seed) is not None:
                skipped.append(run.name())
                continue
            try:
                got = run_training(run.cfg, run.seed, experiment, replace(ctx, progress=False, wait=False))
            except Exception as error:
                job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_JOB_ID") or str(os.getpid())
                write_failure(failure_path(store, experiment, run), job, error)
                print(f"run {run.name()} failed in job {job}: {type(error).__name__}: {error}", flush=True)
                raise
            failure_path(store, experiment, run).unlink(missing_ok=True)
            (skipped if got is None else trained).append(run.name())  # None: another job holds or stored it
        print(f"trained {len(trained)} runs: {trained}; left to others or stored: {skipped}", flush=True)
        return {"trained": trained, "skipped": skipped}


def write_failure(path: Path, job: str, error: Exception) -> None:
    write_json(path, {"job": job, "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()})


def status(runs: list[Run], experiment: str, store: Store) -> dict[str, list[str]]:
    """Each run of a grid as stored, running (its lock held by a job), failed (the last attempt's
    error, until a job stores it), missing or damaged (stored, its files unreadable or incomplete:
    the error, which names the file and the way out)."""
    found = {state: [] for state in STATES}
    for run in runs:
        try:
            stored = store.get(experiment, run.cfg, run.seed)
        except ValueError as error:
            found["damaged"].append(f"{run.name()}: {error}")
            continue
        if stored is not None:
            found["stored"].append(run.name())
            continue
        with store.lock(experiment, run.cfg, run.seed, wait=False) as lock:
            held = lock is None
        failed = failure_path(store, experiment, run)
        if held:
            found["running"].append(run.name())
        elif failed.exists():
            found["failed"].append(f"{run.name()}: {read_json(failed)['error']}")
        else:
            found["missing"].append(run.name())
    return found


def executor(options: LaunchOptions) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=Path(options.folder) / "%j", cluster=options.launcher)
    ex.update_parameters(name="understanding-bn", timeout_min=options.time_min)
    if options.launcher == "slurm":
        ex.update_parameters(gpus_per_node=options.gpus_per_job, cpus_per_task=options.cpus_per_job,
                             slurm_array_parallelism=options.max_parallel,
                             **({"slurm_partition": options.partition} if options.partition else {}))
    return ex


def launch(runs: list[Run], experiment: str, options: LaunchOptions, ctx: RunContext | None = None) -> list:
    """Submit the runs of `runs` that are not stored yet in `ctx.store` as jobs (see the module
    docstring), each computing them under `ctx`; wait for local and debug jobs, and return the
    submitit jobs."""
    ctx = ctx or RunContext()
    missing = [r for r in runs if ctx.store.get(experiment, r.cfg, r.seed) is None]
    if not missing:
        return []
    ctx.store.check_writable(experiment)
    ex = executor(options)
    if options.launcher == "local":  # workers that spread over every missing run
        workers = min(options.max_parallel, len(missing))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ex.batch():
            jobs = [ex.submit(TrainJob(), missing[i:] + missing[:i], experiment, ctx, threads)
                    for i in range(workers)]
    else:  # a job per run
        with ex.batch():
            jobs = [ex.submit(TrainJob(), [run], experiment, ctx) for run in missing]
    if options.launcher in ("local", "debug"):
        try:
            for job in jobs:
                job.result()  # raises with the job's error if it failed
        finally:
            remove_unused_folder(Path(options.folder) / "%j")
    return jobs


def remove_unused_folder(folder: Path) -> None:
    """Remove `folder` if it is empty: submitit's local jobs make their folder's pattern ("%j")
    itself beside the jobs' own folders, and leave it empty."""
    try:
        folder.rmdir()
    except OSError:  # missing, or not empty
        pass


def format_status(found: dict[str, list[str]]) -> str:
    lines = [f"{state}: {len(names)}" for state, names in found.items()]
    for state in ("running", "failed", "missing", "damaged"):
        lines += [f"  {state}: {name}" for name in found[state]]
    return "\n".join(lines)


def grid_runs(cfgs: list[TrainConfig], seeds: list[int]) -> list[Run]:
    return [Run(cfg, seed) for seed in seeds for cfg in cfgs]

