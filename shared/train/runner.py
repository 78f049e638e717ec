"""Training runs into the results store: one run, runs trained together, grids.

A run is stored once complete (`shared.results.Store`), with a checkpoint after every epoch while
it trains, so that a killed command picks up where it stopped; runs that another process holds
are left to it (`run_grid`); `python -m shared.train GRID ...` (`shared.train.__main__`) trains
grids of runs, in this process or as jobs (`shared.launch`).
"""

import contextlib
import hashlib
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..config import TrainConfig, setting_name
from ..grids import is_truncated
from ..fileio import remove_stale_temps, save_torch_atomic, write_atomic
from ..models import CIFAR_DEPTHS
from ..compute import RunContext, default_device, get_or_measure, load_data, stored_run
from ..provenance import code_version, provenance
from ..results import Store, StoredRun, config_hash
from .engine import shared_fields
from .loop import train, train_together
from .pace import check_pace


def run_training(cfg: TrainConfig, seed: int = 0, experiment: str = "train",
                 ctx: RunContext | None = None) -> StoredRun | None:
    """One stored training run: loaded from `ctx.store` if complete, else trained (resuming from
    its checkpoint if a previous attempt was interrupted) and stored. Without `ctx.wait`, a run
    that another process is training is left to it: None. The memory layout is not part of a
    run's identity: a run in another layout than the default belongs in an experiment of its own."""
    ctx = ctx or RunContext()
    store = ctx.store
    checkpoint = store.checkpoint(experiment, cfg, seed)
    if ctx.recompute:
        checkpoint.unlink(missing_ok=True)
    elif is_truncated(cfg) and not checkpoint.exists() and store.get(experiment, cfg, seed) is None:
        continue_shorter(store, experiment, cfg, seed)

    def compute(data):  # under the run's lock
        if not ctx.recompute:
            check_progress_elsewhere(store, experiment, [cfg], seed, checkpoint)
        return train(cfg, data, seed, checkpoint, ctx)

    run = get_or_measure(experiment, cfg, seed, compute, ctx)
    if run is not None:  # a stored run's checkpoint is never resumed again, nor written
        if is_truncated(cfg) and checkpoint.exists():
            keep_final_state(store, experiment, cfg, seed, checkpoint)
        checkpoint.unlink(missing_ok=True)
        remove_stale_temps(checkpoint, older_than_s=0)
    return run


def keep_final_state(store: Store, experiment: str, cfg: TrainConfig, seed: int, checkpoint: Path) -> None:
    """Keep the stored truncated run's last checkpoint in its folder (`Store.state`), so that a
    longer run continues it, here or on another machine; the shorter runs' states it continued
    from are dropped (their results stay: a longer run holds all their epochs)."""
    write_atomic(store.state(experiment, cfg, seed), checkpoint.read_bytes())
    for epochs in range(1, cfg.epochs):
        store.state(experiment, replace(cfg, epochs=epochs, max_epochs=epochs), seed).unlink(missing_ok=True)


def continue_shorter(store: Store, experiment: str, cfg: TrainConfig, seed: int) -> int | None:
    """Start `cfg`'s run (truncated: `grids.is_truncated`) from the kept final state of the longest
    stored shorter run of it, which its first epochs are to the bit: its checkpoint becomes the
    run's, its schedule lengthened to `cfg.epochs`. Returns the epochs continued from, or None."""
    for epochs in range(cfg.epochs - 1, 0, -1):
        shorter = replace(cfg, epochs=epochs, max_epochs=epochs)
        kept = store.state(experiment, shorter, seed)
        if kept.exists() and store.get(experiment, shorter, seed) is not None:
            break
    else:
        return None
    saved = torch.load(kept, map_location="cpu", weights_only=True)
    states = saved["runs"]
    if saved["config_hashes"] != [config_hash(shorter)] or states[0]["result"]["status"] != "completed":
        return None  # a diverged run ends there however long it is given
    for state in states:
        state.update(total_epochs=cfg.epochs, result=None)
    saved["config_hashes"] = [config_hash(cfg)]
    save_torch_atomic(store.checkpoint(experiment, cfg, seed), saved)
    print(f"continuing from the stored {epochs}-epoch run {store.run_dir(experiment, shorter, seed)}", flush=True)
    return epochs


def run_together(cfgs: list[TrainConfig], seed: int, experiment: str, ctx: RunContext | None = None) -> None:
    """Train the runs of `cfgs` (one seed) missing from `ctx.store` together (`train_together`),
    with one checkpoint for the batch, and store each run with the batch's provenance. Each run is
    taken under its lock without waiting: a run another process holds is left to it (`run_grid`
    then waits for it and loads it), so two processes never train, or store, one run twice."""
    ctx = ctx or RunContext()
    store = ctx.store
    with contextlib.ExitStack() as locks:
        taken = []
        for cfg in cfgs:
            if store.get(experiment, cfg, seed) is None:
                lock = locks.enter_context(store.lock(experiment, cfg, seed, wait=False))
                if lock is not None and store.get(experiment, cfg, seed) is None:  # re-checked under the lock
                    taken.append((cfg, lock))
        if not taken:
            return
        missing = [cfg for cfg, _ in taken]
        for cfg in missing:
            store.check_writable(experiment, cfg, seed)
        code = code_version()  # refused before training if the code is not committed
        key = hashlib.sha256(" ".join(config_hash(c) for c in missing).encode()).hexdigest()[:12]
        checkpoint = store.checkpoint(experiment, missing[0], seed).parent.with_name(f"together-{key}")
        checkpoint = checkpoint / f"seed{seed}.pt"
        check_progress_elsewhere(store, experiment, missing, seed, checkpoint)
        device = torch.device(ctx.device or default_device())
        data = load_data(missing[0], ctx.data_dir, device)
        start = time.perf_counter()
        results = train_together(missing, data, [seed] * len(missing), checkpoint, ctx)
        for (cfg, lock), result in zip(taken, results):
            duration = time.perf_counter() - start + result.pop("earlier_segments_s")
            record = provenance(cfg, seed, device, duration, data.source, code)
            store.put(experiment, cfg, seed, stored_run(result, record, code))
            lock.unlink(missing_ok=True)
        checkpoint.unlink(missing_ok=True)
        remove_stale_temps(checkpoint, older_than_s=0)


def saved_progress(checkpoint: Path) -> list[tuple[str, dict]]:
    """(config hash, saved training state) of each run a checkpoint holds; [] where it cannot be
    read (damaged: the command that resumes it says so)."""
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return list(zip(saved["config_hashes"], saved["runs"]))
    except Exception:  # torch raises many kinds on a damaged file
        return []


def check_progress_elsewhere(store: Store, experiment: str, cfgs: list[TrainConfig], seed: int,
                             checkpoint: Path) -> None:
    """Refuse to train `cfgs` (runs of `seed`, under their locks) from `checkpoint` while another
    checkpoint holds the progress of one of them: its own (trained alone), or one of runs trained
    together (`run_together`), left by a command killed under another --together. Started afresh,
    the run would lose that progress and leave that checkpoint for good; the error says where it
    is and how to resume it. (The locks are held: no other process is training these runs.)"""
    wanted = {config_hash(cfg): cfg for cfg in cfgs}
    own = [store.checkpoint(experiment, cfg, seed) for cfg in cfgs]
    groups = sorted((Path(store.checkpoints) / experiment).glob(f"together-*/seed{seed}.pt"))
    for path in [*own, *groups]:
        if path == checkpoint or not path.exists():
            continue
        held = saved_progress(path)
        for key, state in held:
            if key in wanted:
                raise ValueError(progress_message(wanted[key], seed, path, state, len(held)))


def progress_message(cfg: TrainConfig, seed: int, path: Path, state: dict, together: int) -> str:
    """Where the progress of a run that would be trained afresh is, and how to resume it."""
    run = f"the run '{setting_name(cfg)}' ({cfg.arch}, {config_hash(cfg)}) seed {seed}"
    got = f"got to epoch {state['epoch']} of {state['total_epochs']} in {path}"
    if path.parent.name.startswith("together-"):
        how = (f"was being trained together with {together - 1} other run(s) (by a command with --together "
               f"{together} or more) and {got}")
        way_out = (f"Resume it with the --together, grids and settings of the command that started it, "
                   f"or delete {path.parent} to train these runs afresh.")
    else:
        how = f"was being trained on its own (--together 1) and {got}"
        way_out = f"Resume it with --together 1, or delete {path} to train it afresh."
    return f"{run} {how}; started afresh here, that progress would be lost. {way_out}"


def together_groups(cfgs: list[TrainConfig], size: int) -> list[list[TrainConfig]]:
    """`cfgs` split into groups of at most `size` that can be trained together (`check_stackable`)."""
    groups: dict[tuple, list[TrainConfig]] = {}
    for cfg in cfgs:
        groups.setdefault(tuple(shared_fields(cfg).values()), []).append(cfg)
    batches = []
    for group in groups.values():
        n = size if group[0].arch in CIFAR_DEPTHS else 1  # only CIFAR ResNets stack
        batches += [group[i:i + n] for i in range(0, len(group), n)]
    return batches


def run_grid(configs: list[TrainConfig], seed: int, experiment: str, ctx: RunContext | None = None,
             together: int = 1, slow_ok: bool = False) -> list[StoredRun]:
    """Every config's stored run for `seed`, training what is missing, `together` runs at a time
    where they can share one model (`train_together`); an interrupted grid resumes where it stopped
    (stored runs are loaded, interrupted ones continue from their checkpoint). Runs that another
    process is training are skipped at first and waited for at the end, so that N processes given
    one grid train N different runs at a time. Before any is computed on a CPU, `check_pace`
    refuses runs whose precision crawls there, unless `slow_ok`."""
    ctx = ctx or RunContext()
    check_pace([c for c in configs if ctx.store.get(experiment, c, seed) is None],
               ctx.device or default_device(), slow_ok)
    if together > 1:
        for group in together_groups(configs, together):
            run_together(group, seed, experiment, ctx)
    runs = [run_training(cfg, seed, experiment, replace(ctx, wait=False)) for cfg in configs]
    return [run or run_training(cfg, seed, experiment, replace(ctx, wait=True))
            for cfg, run in zip(configs, runs)]
