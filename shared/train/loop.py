"""The paper's training loop (appendix B), resumable, with divergence recorded as a result.

`train` runs SGD on a `Cifar10` held on the device. Per epoch it records train loss/accuracy (on
the augmented mini-batches, as the paper's Fig 1 does), test loss/accuracy, the learning rate and
the wall time. Divergence ends the run with status "diverged" and the step where it happened.

What "diverged" means. The paper (Sec. 2) calls a run diverged once a mini-batch loss rises above
1e3, but ResNet-110 without BN already starts above that: its loss before any update is 270-1418
on seeds 0-4 (Xavier init), and 1e8-1e10 with Kaiming init. So a run diverges at the first step t
>= 1, i.e. after at least one update, whose mini-batch loss is non-finite or above both the
paper's 1e3 (`divergence_loss`) and `divergence_factor` times the run's initial loss (the loss of
its first mini-batch, before any update): training must have made the loss much worse. The step
where the loss first exceeds 1e3 or is non-finite, step 0 included (the paper's threshold taken
literally), is recorded beside it as "first_above_step". A run that does not diverge can still fail
to learn; "failure" records why: its last epoch's mean train loss is not below its initial loss,
or its final test accuracy is at chance (at most `chance_accuracy`). (Not the first epoch's loss: with
BN at lr 0.1, ResNet-110's loss rises during its first epoch and then falls.)

A diverged run costs no more compute than it must: every `divergence_check_every` steps the losses
are read (the only host synchronisation within an epoch) and once every run still training has
diverged, the epoch stops.

How the steps run (K runs stacked as one network, the precision, the memory layout, compilation)
is the engine's (`shared.train.engine`), recorded in each result's "engine"; the precision is a
config field, the rest are not. This module reads top to bottom: a run's state, the schedule and
its doubling rule, divergence, one run's epoch, one epoch of every run, a run, its checkpoint.

Within an epoch there is no host synchronisation: losses and correct counts accumulate on the
device and are read once at the end of the epoch. A checkpoint is written atomically after every
epoch; since the data order of an epoch is a pure function of (seed, epoch) (`TrainLoader`), a
killed run resumed from its checkpoint continues exactly as if it had not been interrupted.
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..compute import RunContext
from ..config import TrainConfig, check_choice
from ..data import Cifar10, TrainLoader
from ..fileio import save_torch_atomic
from ..precision import tf32_setting
from ..provenance import SEGMENTS, code_of, git_commit
from ..results import config_hash
from .engine import MEMORY_FORMATS, Runs, evaluate, network_health, train_epoch


# The defaults of the config fields that define divergence and chance (each run's own are its config's)
CHANCE_ACCURACY = TrainConfig.chance_accuracy


@dataclass
class RunEnd:
    """How a run ended: "completed" (`failure` says if it still failed to learn) or "diverged" at
    `diverged_step` (in `diverged_epoch`), with the step losses up to it."""
    status: str
    failure: str | None
    diverged_step: int | None = None
    diverged_epoch: int | None = None
    diverged_trace: list[float] = field(default_factory=list)

    def stored(self) -> dict:
        """The fields as a stored result holds them (a completed run has no diverged_epoch)."""
        values = asdict(self)
        if self.diverged_epoch is None:
            del values["diverged_epoch"]
        return values


@dataclass
class RunState:
    """One run's training state, saved in its checkpoint after every epoch."""
    total_epochs: int                   # the schedule's current length (the doubling rule may grow it)
    epoch: int = 0                      # epochs done
    metrics: list[dict] = field(default_factory=list)  # one row per epoch trained
    initial_loss: float | None = None   # the first mini-batch's loss, before any update
    first_above_step: int | None = None  # first step with loss > divergence_loss or non-finite
    result: RunEnd | None = None        # set when the run ends
    elapsed_s: float = 0.0              # wall seconds spent on the run up to its last checkpoint
    # the code version of each segment that trained it, in order: one commit unless it was resumed
    # from code of another commit (the store's provenance names the last)
    code: list[str] = field(default_factory=list)
    # the code of each segment, in order: {"commit", "diff" where "+dirty", "code_hash" where "unknown"}
    # (`code_segment`); a new one wherever the code differs from the last, an edit under one commit too
    segments: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.result, dict):  # read back from a checkpoint
            self.result = RunEnd(**self.result)
        if not self.segments:  # a checkpoint written before segments were kept: commits, no diffs
            self.segments = [{"commit": commit} for commit in self.code]

    @property
    def active(self) -> bool:
        return self.result is None


def code_segment(commit: str) -> dict:
    """The code this segment trains with, named by `commit` (`git_commit`), as `RunState.segments`
    keeps it: with the diff when "+dirty", a hash of the files when "unknown" (`code_of`)."""
    return {k: v for k, v in asdict(code_of(commit)).items() if v is not None}


def lr_at(cfg: TrainConfig, epoch: int, total_epochs: int) -> float:
    """The rate for 0-based `epoch` of a `total_epochs` schedule: lr / 10 after each drop, and
    lr / 10 during the first `cfg.warmup_epochs` (an ablation: He et al.'s warm-up)."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr / 10
    drops = sum(epoch >= int(f * total_epochs) for f in cfg.lr_drops)
    return cfg.lr * cfg.lr_drop_factor ** drops


def plateaued(train_losses: list[float], window: int, rel_tol: float) -> bool:
    """The plateau test of the doubling rule.

    Training has plateaued when the mean train loss of the last `window` epochs is less than a
    fraction `rel_tol` below the mean of the `window` epochs before them. With fewer than
    2 * `window` epochs there is not enough evidence, and the answer is False.
    """
    if len(train_losses) < 2 * window:
        return False
    before = sum(train_losses[-2 * window:-window]) / window
    last = sum(train_losses[-window:]) / window
    return before - last < rel_tol * abs(before)


def next_total_epochs(cfg: TrainConfig, epochs_done: int, total_epochs: int,
                      train_losses: list[float]) -> int:
    """The doubling rule: at the first rate drop, double the schedule unless training plateaued.

    The first phase runs at the constant initial rate, so doubling the schedule there only
    lengthens it: the run goes on from where it is, and its drops move to 50 % / 75 % of the
    doubled length, exactly as if it had been started with that length.
    """
    at_first_drop = epochs_done == int(cfg.lr_drops[0] * total_epochs) if cfg.lr_drops else False
    if (at_first_drop and 2 * total_epochs <= cfg.max_epochs
            and not plateaued(train_losses, cfg.plateau_window, cfg.plateau_rel_tol)):
        return 2 * total_epochs
    return total_epochs


def divergence_thresholds(cfgs: list[TrainConfig], initial_losses: torch.Tensor) -> torch.Tensor:
    """Per run: the loss above which a step counts as divergent (see the module docstring)."""
    floor = torch.tensor([c.divergence_loss for c in cfgs], device=initial_losses.device)
    factor = torch.tensor([c.divergence_factor for c in cfgs], device=initial_losses.device)
    return torch.maximum(floor, factor * initial_losses)


def divergent(step_losses: torch.Tensor, thresholds: torch.Tensor, first_update_step: int) -> torch.Tensor:
    """[steps, K] bool: the steps (at or after `first_update_step`) that count as divergent."""
    bad = ~torch.isfinite(step_losses) | (step_losses > thresholds)
    bad[:first_update_step] = False
    return bad


def first_step(mask: torch.Tensor) -> int | None:
    """The first index where the 1-D bool `mask` is true, or None."""
    return int(mask.nonzero()[0]) if mask.any() else None


@dataclass
class EpochOutcome:
    """One run's numbers of one epoch of the stacked runs (its column of their tensors)."""
    row: dict                       # the metrics row: epoch, lr, steps, losses, accuracies, wall_s
    step_losses: list[float]        # every step's mini-batch loss
    start_step: int                 # the global index of the epoch's first step
    bad_step: int | None            # the epoch's first divergent step (`divergent`), or None
    above_step: int | None          # its first step above the paper's 1e3 or non-finite, or None
    health: dict | None             # `network_health`, where the config records it


def record_epoch(cfg: TrainConfig, state: RunState, outcome: EpochOutcome) -> None:
    """Add one epoch to a run still going: its metrics row, then divergence (which ends the run
    there) or the doubling rule and the end of the schedule."""
    if state.first_above_step is None and outcome.above_step is not None:
        state.first_above_step = outcome.start_step + outcome.above_step
    ok = outcome.bad_step is None
    row = dict(outcome.row)
    if not ok:
        row.update(train_loss=None, test_loss=None, test_acc=None)
    if outcome.row["epoch"] <= cfg.record_step_losses:
        row["step_losses"] = outcome.step_losses
    if outcome.health is not None:
        row["health"] = outcome.health
    state.metrics.append(row)
    if not ok:
        state.result = RunEnd("diverged", "diverged", outcome.start_step + outcome.bad_step, row["epoch"],
                              outcome.step_losses[:outcome.bad_step + 1])
        return
    losses = [m["train_loss"] for m in state.metrics]
    state.total_epochs = next_total_epochs(cfg, state.epoch, state.total_epochs, losses)
    if state.epoch >= state.total_epochs:
        state.result = RunEnd("completed", learning_failure(state.initial_loss, state.metrics, cfg.chance_accuracy))


def run_epoch(cfgs: list[TrainConfig], runs: Runs, loaders: list[TrainLoader], data: Cifar10,
              states: list[RunState], steps: int) -> None:
    """Train and evaluate one epoch of every run still going; update their states in place:
    the paper's loop of rates, SGD steps, evaluation, divergence and the doubling rule."""
    epoch = states[0].epoch
    lrs = [lr_at(c, epoch, s.total_epochs) for c, s in zip(cfgs, states)]
    runs.set_lrs([lr if s.active else 0.0 for lr, s in zip(lrs, states)])
    first_update_step = 1 if epoch == 0 else 0  # step 0 of epoch 0 is measured before any update
    device = loaders[0].x.device
    initial = None if epoch == 0 else torch.tensor([s.initial_loss for s in states], device=device)
    active_mask = torch.tensor([s.active for s in states], device=device)

    def all_active_diverged(losses: torch.Tensor) -> bool:
        thresholds = divergence_thresholds(cfgs, losses[0] if initial is None else initial)
        return bool(divergent(losses, thresholds, first_update_step).any(0)[active_mask].all())

    start = time.perf_counter()
    step_losses, correct = train_epoch(runs, loaders, epoch, steps, all_active_diverged,
                                      cfgs[0].divergence_check_every)
    if epoch == 0:
        initial = step_losses[0]
        for state, value in zip(states, initial.tolist()):
            state.initial_loss = value
    bad = divergent(step_losses, divergence_thresholds(cfgs, initial), first_update_step)
    above = divergent(step_losses, divergence_thresholds(cfgs, torch.zeros_like(initial)), 0)
    done = len(step_losses)
    n_seen = min(done * cfgs[0].batch_size, len(data.train_y))
    batch_sizes = torch.full((done, 1), cfgs[0].batch_size, device=step_losses.device)
    batch_sizes[-1] = n_seen - (done - 1) * cfgs[0].batch_size  # the last partial batch is kept
    train_losses = [v / n_seen for v in (step_losses * batch_sizes).sum(0).tolist()]
    train_accs = [c / n_seen for c in correct.tolist()]
    test_losses, test_accs = evaluate(runs, data, cfgs[0].eval_batch_size)
    wall_s = time.perf_counter() - start
    healths = network_health(runs, data, cfgs[0].record_health, done) if cfgs[0].record_health else None
    columns = zip(lrs, train_losses, train_accs, test_losses, test_accs, step_losses.T.tolist(), bad.T, above.T,
                  healths or [None] * len(states))
    outcomes = [EpochOutcome({"epoch": epoch + 1, "lr": lr, "steps": done, "train_loss": train_loss,
                              "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc, "wall_s": wall_s},
                             losses, epoch * steps, first_step(bad_k), first_step(above_k), health)
                for lr, train_loss, train_acc, test_loss, test_acc, losses, bad_k, above_k, health in columns]
    for cfg, state, outcome in zip(cfgs, states, outcomes):
        state.epoch = epoch + 1
        if state.active:
            record_epoch(cfg, state, outcome)


def learning_failure(initial_loss: float, metrics: list[dict],
                     chance_accuracy: float = CHANCE_ACCURACY) -> str | None:
    """Why a run that did not diverge still failed to learn, or None (see the module docstring)."""
    if not metrics[-1]["train_loss"] < initial_loss:
        return "train loss not below the initial loss"
    if metrics[-1]["test_acc"] <= chance_accuracy:
        return "final test accuracy at chance"
    return None


def train(cfg: TrainConfig, data: Cifar10, seed: int = 0, checkpoint: Path | None = None,
          ctx: RunContext | None = None, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train one network on `data` (already on its device); resume from `checkpoint` if present.
    `ctx` (`shared.compute.RunContext`) gives the progress bar, `torch.compile` and the memory layout.

    Returns {"status": "completed" | "diverged", "epochs": the final schedule length,
    "diverged_step": global 0-based step or None, "diverged_trace": the losses of the diverging
    epoch's steps up to and including that step, "metrics": one dict per epoch run, "engine",
    "code": the commit of each segment that trained it (`RunState.code`), "code_segments": each
    segment's code with its diff (`RunState.segments`; the store moves them to the provenance),
    "earlier_segments_s": the wall seconds spent before this call resumed it (0 if it did not)}.
    """
    return train_together([cfg], data, [seed], checkpoint, ctx, on_epoch_end)[0]


def train_together(cfgs: list[TrainConfig], data: Cifar10, seeds: list[int], checkpoint: Path | None = None,
                   ctx: RunContext | None = None,
                   on_epoch_end: Callable[[int], None] | None = None) -> list[dict]:
    """Train K runs at once (`Runs`), each with its own config and seed; returns each run's result
    as `train` does, equal (to float rounding) to training it alone. A run that diverges or ends
    its schedule stops learning (rate 0) while the others go on; the rest of its epochs is not
    recorded. `on_epoch_end(epochs done)` is called after each epoch's checkpoint. The memory
    layout (`ctx.memory_format`, MEMORY_FORMATS) is the network's and its batches': the same
    arithmetic summed in another order, so a run in the other layout is a rounding-level twin of
    the default one."""
    ctx = ctx or RunContext()
    if len(cfgs) != len(seeds) or not cfgs:
        raise ValueError(f"one seed per config: got {len(cfgs)} configs and {len(seeds)} seeds")
    device = data.train_x.device
    check_choice("memory_format", ctx.memory_format, MEMORY_FORMATS)
    runs = Runs(cfgs, seeds, device, MEMORY_FORMATS[ctx.memory_format])
    if ctx.compile:
        runs.forward = torch.compile(runs.model)
    loaders = [TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfgs[0].batch_size, seed)
               for seed in seeds]
    steps = min(len(loaders[0]), cfgs[0].steps_per_epoch or len(loaders[0]))
    states = [RunState(total_epochs=cfg.epochs) for cfg in cfgs]
    if checkpoint is not None and checkpoint.exists():
        states = load_checkpoint(checkpoint, cfgs, seeds, runs)
    segment_start, earlier_s = time.perf_counter(), states[0].elapsed_s  # earlier: before a resume
    commit = git_commit()
    segment = code_segment(commit)
    for state in states:
        if state.active and state.code[-1:] != [commit]:
            state.code.append(commit)
        if state.active and state.segments[-1:] != [segment]:
            state.segments.append(segment)
    names = ", ".join(f"lr={c.lr:g} seed={s}" for c, s in zip(cfgs, seeds))
    bar = tqdm(total=max(s.total_epochs for s in states), initial=states[0].epoch,
               disable=not ctx.progress, desc=f"{cfgs[0].arch} bn={cfgs[0].bn} {names}", leave=False)
    with tf32_setting(cfgs[0].precision):
        while any(s.active for s in states):
            run_epoch(cfgs, runs, loaders, data, states, steps)
            for state in states:
                state.elapsed_s = earlier_s + time.perf_counter() - segment_start
            if checkpoint is not None:
                save_torch_atomic(checkpoint, {"runs": [asdict(s) for s in states],
                                               "model": runs.model.state_dict(),
                                               "optimizer": runs.optimizer.state_dict(),
                                               "config_hashes": [config_hash(c) for c in cfgs],
                                               "seeds": list(seeds)})
            bar.total = max(s.total_epochs for s in states)
            bar.update(1)
            if on_epoch_end is not None:
                on_epoch_end(states[0].epoch)
    bar.close()
    engine = {"runs_together": len(cfgs), "compiled": ctx.compile, "precision": cfgs[0].precision,
              "memory_format": "channels_last" if runs.memory_format == torch.channels_last else "nchw"}
    return [{**s.result.stored(), "epochs": s.total_epochs, "initial_loss": s.initial_loss,
             "first_above_step": s.first_above_step, "metrics": s.metrics, "engine": engine,
             "code": s.code, SEGMENTS: s.segments, "earlier_segments_s": earlier_s} for s in states]


def load_checkpoint(path: Path, cfgs: list[TrainConfig], seeds: list[int], runs: Runs) -> list[dict]:
    """Restore the model and optimizer from `path`; return the runs' saved training states."""
    try:
        saved = torch.load(path, map_location=next(runs.model.parameters()).device, weights_only=True)
    except Exception as error:  # torch raises many kinds on a damaged file (even IndexError)
        raise ValueError(f"cannot read the checkpoint {path} ({type(error).__name__}): it is damaged or "
                         "not a checkpoint of this project; delete it to start these runs afresh") from None
    expected = [config_hash(c) for c in cfgs]
    if "runs" not in saved or saved["config_hashes"] != expected or saved["seeds"] != list(seeds):
        raise ValueError(f"checkpoint {path} belongs to other runs ({saved.get('config_hashes')}, "
                         f"seeds {saved.get('seeds')}; expected {expected}, seeds {list(seeds)}); "
                         "delete it to start these runs afresh")
    runs.model.load_state_dict(saved["model"])
    runs.optimizer.load_state_dict(saved["optimizer"])
    return [RunState(**s) for s in saved["runs"]]
