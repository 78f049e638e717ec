"""Get a run from the store, or compute and store it: the one place that loads the data, picks the
device, calls down into a measurement or the training loop, and puts the result with its provenance.

An entry point (the training and experiments commands, a notebook's parameters, a launcher's job)
makes one `RunContext`, where the runs go and how they are computed, and passes it down; nothing
below calls back up. The store itself (`shared.results.Store`) only keeps runs, and what a figure
reads of it goes through `config_runs`, which refuses runs computed on different images.
"""

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import torch

from .data import Cifar10, data_source, load_cifar10, source_digest
from .provenance import DIFF_FILE, SEGMENTS, CodeVersion, code_version, provenance, segment_records
from .results import Store, StoredRun


@dataclass(frozen=True)
class RunContext:
    """How runs are got or computed: the store, the CIFAR-10 copy (None: `shared.data`'s default),
    the device (None: the GPU if there is one), whether to recompute stored runs, progress bars,
    `torch.compile`, the networks' memory layout, and whether to wait for a run another process
    is computing (False: leave it to that process)."""
    store: Store = field(default_factory=Store)
    data_dir: str | None = None
    device: str | None = None
    recompute: bool = False
    progress: bool = True
    compile: bool = False
    memory_format: str = "channels_last"
    wait: bool = True


def stored_run(result: dict, record: dict, code: CodeVersion | None) -> StoredRun:
    """`result` with its provenance `record` as the store keeps them: the code of each segment that
    computed it, where `result` lists it (SEGMENTS), moves to the provenance, and the diffs (of the
    segments, and of `code`, the code the computation started from) become files beside it."""
    result = dict(result)
    segments, files = segment_records(result.pop(SEGMENTS, None) or [], code)
    if code is not None and code.diff is not None:
        files[DIFF_FILE] = code.diff
    return StoredRun(result, {**record, **({SEGMENTS: segments} if segments else {})}, files)


def get_or_compute(experiment: str, config, seed: int, compute: Callable[[], dict], ctx: RunContext,
                   data: str | None = None) -> StoredRun | None:
    """The completed run from `ctx.store`, or `compute()` called under the run's lock and stored
    with its provenance (`data`: the data it read). A result may carry "earlier_segments_s", the
    seconds spent on it before a resume, added to its duration. Without `ctx.wait`, a run whose
    lock another process holds, or that another process stored after the first look, is left to
    it: None (so None means exactly "not computed here")."""
    store = ctx.store
    if not ctx.recompute and (stored := store.get(experiment, config, seed)):
        return stored if ctx.wait else None  # stored since the caller's first look: not computed here
    store.check_writable(experiment, config, seed)
    code = code_version()  # refused here, before computing, if the code is not committed
    with store.lock(experiment, config, seed, ctx.wait) as lock:
        if lock is None:
            return None
        if not ctx.recompute and (stored := store.get(experiment, config, seed)):
            return stored if ctx.wait else None  # another process stored it meanwhile
        start = time.perf_counter()
        result = compute()
        duration = time.perf_counter() - start + result.pop("earlier_segments_s", 0.0)
        record = provenance(config, seed, ctx.device or default_device(), duration, data, code)
        stored = store.put(experiment, config, seed, stored_run(result, record, code), overwrite=ctx.recompute)
        lock.unlink(missing_ok=True)
        return stored


def get_or_measure(experiment: str, config, seed: int, measure: Callable[[Cifar10], dict],
                   ctx: RunContext) -> StoredRun | None:
    """The run from the store, or `measure(data)` computed and stored: `data` is CIFAR-10 from
    `ctx.data_dir` as the config asks (its train_subset / test_subset), on `ctx.device` (default:
    the GPU if there is one), loaded only when the run is missing."""
    if not ctx.recompute and (stored := ctx.store.get(experiment, config, seed)):
        check_same_data(stored, ctx.data_dir, ctx.store.run_dir(experiment, config, seed))
        return stored
    device = torch.device(ctx.device or default_device())
    data = load_data(config, ctx.data_dir, device)
    return get_or_compute(experiment, config, seed, lambda: measure(data), replace(ctx, device=str(device)),
                          data.source)


def measured(experiment: str, cfg, seed: int, measure: Callable, ctx: RunContext | None = None,
             needs_data: bool = True) -> StoredRun | None:
    """The stored run of `experiment` for (cfg, seed), else `measure(cfg, data, seed)` computed
    under `ctx` and stored (`measure(cfg, seed)`, on the CPU, where it `needs_data` not)."""
    ctx = ctx or RunContext()
    if not needs_data:
        return get_or_compute(experiment, cfg, seed, lambda: measure(cfg, seed), replace(ctx, device="cpu"))
    return get_or_measure(experiment, cfg, seed, lambda data: measure(cfg, data, seed), ctx)


def config_runs(experiment: str, config, seeds: Iterable[int] | None = None, data_dir=None) -> list[StoredRun]:
    """The project store's completed runs of exactly `config` (only `seeds`, if given), by seed:
    what the notebooks show; refused where they were computed on different images, from each
    other or from the copy in `data_dir` (default: $CIFAR10_DIR, else data/): `check_one_data`."""
    found = Store().runs(experiment, config, seeds)
    check_one_data(found, data_dir)
    return found


class OtherDataError(ValueError):
    """A stored run was computed on other images than the data dir holds now."""


def check_one_data(runs: list[StoredRun], data_dir=None, shown: int = 4) -> None:
    """Refuse `runs` computed on different images (the hash in their provenance's
    "data"), from each other or from the copy the data dir holds (`check_same_data`): a figure would
    average numbers of different data. Runs that recorded no hash are served."""
    by_data: dict[str, list[tuple[Path, str]]] = {}
    for run in runs:
        if digest := source_digest(run.provenance["data"]):
            by_data.setdefault(digest, []).append((run, run.provenance["data"]))
    if len(by_data) > 1:
        groups = "; ".join(", ".join(str(run.folder) for run, _ in found[:shown])
                           + (f" and {len(found) - shown} more" if len(found) > shown else "") + f" on {found[0][1]}"
                           for found in by_data.values())
        raise OtherDataError(
            f"the stored runs read together were computed on different data: {groups}. Their numbers "
            "would be averaged as one; keep the runs of one copy of the data (delete the others' "
            "folders to compute them again on the data dir's copy).")
    if by_data:
        (run, _), *_ = next(iter(by_data.values()))
        check_same_data(run, data_dir, run.folder)


def check_same_data(stored: StoredRun, data_dir, where: Path) -> None:
    """Refuse to serve a stored run computed on other data than the data dir holds (compared by the
    hash of pixels and labels in its provenance's "data"). Where the data dir holds no copy, or the
    run recorded no hash, there is nothing to compare and the run is served."""
    was = stored.provenance.get("data")
    now = data_source(data_dir)
    if source_digest(was) and source_digest(now) and source_digest(was) != source_digest(now):
        raise OtherDataError(
            f"the stored run {where} was computed on other data ({was}) than the data dir holds now "
            f"({now}); its numbers do not describe this data. Point $BN_RESULTS_DIR at a store of "
            "your own to compute on this data, point --data-dir (data_dir, $CIFAR10_DIR) at the data "
            f"the store was computed on, or delete {where} to compute the run again on this data.")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else []),
            *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def check_device(name: str | torch.device) -> torch.device:
    """`name` as a torch.device if this machine has it, else a ValueError naming the valid ones."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or str(device) not in available_devices():
        raise ValueError(f"unknown device {str(name)!r}; valid here: {', '.join(available_devices())}")
    return device


def load_data(config, data_dir=None, device=None) -> Cifar10:
    """CIFAR-10 from `data_dir` as `config` asks (its train_subset / test_subset, if it has them),
    on `device`."""
    return load_cifar10(data_dir).subset(getattr(config, "train_subset", None),
                                         getattr(config, "test_subset", None)).to(device)
