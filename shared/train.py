"""Training as in the paper's appendix B, resumable, with divergence recorded as a result.

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

Networks and batches are laid out channels-last (NHWC): the same arithmetic as the default layout,
faster on CPU (benchmarks/train_speed.py measures both). `train_together` trains K runs of a CIFAR
ResNet that differ in seed, learning rate or schedule length as one stacked network (`Runs`), each
run's results equal to training it alone up to float rounding; `compile=True` runs the network
under torch.compile. Both are engine choices, recorded in each result's "engine", not config fields.
The precision is a config field (`shared.precision`): under bf16 each step's forward pass and loss,
and each evaluation, is its own autocast region; backward and the optimizer step run outside it.

Within an epoch there is no host synchronisation: losses and correct counts accumulate on the
device and are read once at the end of the epoch. A checkpoint is written atomically after every
epoch; since the data order of an epoch is a pure function of (seed, epoch) (`TrainLoader`), a
killed run resumed from its checkpoint continues exactly as if it had not been interrupted.
"""

import contextlib
import hashlib
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import TrainConfig, check_choice, network_fields
from .data import Cifar10, TrainLoader, eval_batches
from .models import CIFAR_DEPTHS, build_model, stack_models
from .fileio import remove_stale_temps, save_torch_atomic
from .health import health
from .precision import AUTO, autocast, resolve_precision, tf32_setting
from .results import Store, code_version, config_hash, default_device, get_or_measure, load_data


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

    def __post_init__(self):
        if isinstance(self.result, dict):  # read back from a checkpoint
            self.result = RunEnd(**self.result)

    @property
    def active(self) -> bool:
        return self.result is None


def lr_at(cfg: TrainConfig, epoch: int, total_epochs: int) -> float:
    """The rate for 0-based `epoch` of a `total_epochs` schedule: lr / 10 after each drop."""
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


class StackedSGD(torch.optim.Optimizer):
    """torch.optim.SGD (momentum, weight decay; no dampening, no Nesterov) for K runs stacked along
    dim 0 of every parameter (`shared.models.stack_models`), each with its own learning rate."""

    def __init__(self, params, lrs: list[float], momentum: float, weight_decay: float):
        super().__init__(params, dict(lr=list(lrs), momentum=momentum, weight_decay=weight_decay))
        self._lr_cache = (None, None)

    def _lr_tensor(self, lrs: list[float], device) -> torch.Tensor:
        if self._lr_cache[0] != lrs:  # copied to the device only when the rates change
            self._lr_cache = (list(lrs), torch.tensor(lrs, device=device))
        return self._lr_cache[1]

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            runs = len(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d_p.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                lr = self._lr_tensor(group["lr"], p.device).view(runs, *[1] * p.dim())
                # [K*C, ...] -> [K, C, ...]: run k's rows scaled by its rate
                p.unflatten(0, (runs, -1)).sub_(state["momentum_buffer"].unflatten(0, (runs, -1)) * lr)


class Runs:
    """K training runs of one architecture as one model: a single network with torch's SGD when
    K = 1, else the K networks stacked (grouped convolutions) with `StackedSGD`. Each run's
    network is initialised from its own seed exactly as it would be alone."""

    def __init__(self, cfgs: list[TrainConfig], seeds: list[int], device: torch.device,
                 memory_format: torch.memory_format = torch.channels_last):
        check_stackable(cfgs)
        self.memory_format = memory_format
        cfg = cfgs[0]
        self.precision = cfg.precision
        models = []
        for seed in seeds:
            torch.manual_seed(seed)
            models.append(build_model(bn=cfg.bn, **network_fields(cfg)).to(device, memory_format=memory_format))
        self.count = len(cfgs)
        if self.count == 1:
            self.model = models[0]
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
        else:
            self.model = stack_models(models)
            self.optimizer = StackedSGD(self.model.parameters(), [c.lr for c in cfgs], cfg.momentum,
                                        cfg.weight_decay)
        self.forward = self.model

    def set_lrs(self, lrs: list[float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lrs[0] if self.count == 1 else list(lrs)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, K*3, 32, 32] (run k's images in channels 3k..3k+2) -> logits [B, K, classes]."""
        out = self.forward(x.contiguous(memory_format=self.memory_format)).float()
        return out[:, None] if self.count == 1 else out


# The engine's memory layouts by name (`train_together`); channels-last is faster on a CPU
MEMORY_FORMATS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}

# The config fields in which runs trained together may differ: the learning rate and schedule length
STACK_MAY_DIFFER = ("lr", "epochs", "max_epochs")


def shared_fields(cfg: TrainConfig) -> dict:
    """The fields that runs trained together must share (all but STACK_MAY_DIFFER)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in STACK_MAY_DIFFER}


def check_stackable(cfgs: list[TrainConfig]) -> None:
    """Runs trained together may differ in their learning rate and schedule length only."""
    first = shared_fields(cfgs[0])
    for cfg in cfgs[1:]:
        for name, value in shared_fields(cfg).items():
            if value != first[name]:
                raise ValueError(f"runs trained together must share {name}: got {first[name]!r} and "
                                 f"{value!r}; only {list(STACK_MAY_DIFFER)} may differ")
    if len(cfgs) > 1 and cfgs[0].arch not in CIFAR_DEPTHS:
        raise ValueError(f"only CIFAR ResNets ({', '.join(CIFAR_DEPTHS)}) can be trained together, "
                         f"got {cfgs[0].arch!r}")


def evaluate(runs: Runs, data: Cifar10, batch_size: int) -> tuple[list[float], list[float]]:
    """Per-run test loss and accuracy without augmentation, BN in inference mode."""
    runs.model.eval()
    device = data.test_x.device
    loss_sum = torch.zeros(runs.count, device=device)
    correct = torch.zeros(runs.count, device=device, dtype=torch.long)
    with torch.no_grad():
        for x, y in eval_batches(data.test_x, data.test_y, data.mean, data.std, batch_size):
            with autocast(runs.precision, device):
                logits = runs.logits(x.repeat(1, runs.count, 1, 1))  # every run sees the same images
                loss_sum += torch.stack([F.cross_entropy(logits[:, k], y, reduction="sum")
                                         for k in range(runs.count)])
            correct += (logits.argmax(2) == y[:, None]).sum(0)
    n = len(data.test_y)
    return [v / n for v in loss_sum.tolist()], [c / n for c in correct.tolist()]


def network_health(runs: Runs, data: Cifar10, images: int) -> list[dict]:
    """Per run, `shared.health.health` on the first `images` test images (not augmented), in the
    runs' precision: dead ReLUs per stage and the logits' spread across images."""
    x, _ = next(eval_batches(data.test_x[:images], data.test_y[:images], data.mean, data.std, images))
    with autocast(runs.precision, x.device):
        return health(runs.model, x.repeat(1, runs.count, 1, 1).contiguous(memory_format=runs.memory_format),
                      runs.count)


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


def train_epoch(runs: Runs, loaders: list[TrainLoader], epoch: int, steps: int,
                stop_when: Callable[[torch.Tensor], bool] | None = None,
                check_every: int = TrainConfig.divergence_check_every):
    """One epoch of SGD for every run; returns per-step losses [steps done, K] and correct counts
    [K], on the device. `stop_when(losses so far)`, asked every `check_every` steps (the
    only host synchronisation), ends the epoch early when it returns True."""
    runs.model.train()
    device = loaders[0].x.device
    step_losses = torch.zeros(steps, runs.count, device=device)
    correct = torch.zeros(runs.count, device=device, dtype=torch.long)
    done = 0
    for i, batches in zip(range(steps), zip(*(loader.epoch(epoch) for loader in loaders))):
        x = torch.cat([xb for xb, _ in batches], dim=1)  # K x [B, 3, 32, 32] -> [B, K*3, 32, 32]
        y = torch.stack([yb for _, yb in batches])       # [K, B]
        with autocast(runs.precision, device):          # forward and loss only (shared.precision)
            logits = runs.logits(x)                      # [B, K, classes]
            losses = torch.stack([F.cross_entropy(logits[:, k], y[k]) for k in range(runs.count)])
        runs.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # run k's parameters see only run k's loss
        runs.optimizer.step()
        step_losses[i] = losses.detach()
        correct += (logits.detach().argmax(2) == y.T).sum(0)
        done = i + 1
        if stop_when is not None and done % check_every == 0 and stop_when(step_losses[:done]):
            break
    return step_losses[:done], correct


def train(cfg: TrainConfig, data: Cifar10, seed: int = 0, checkpoint: Path | None = None,
          progress: bool = True, on_epoch_end: Callable[[int], None] | None = None,
          compile: bool = False, memory_format: str = "channels_last") -> dict:
    """Train one network on `data` (already on its device); resume from `checkpoint` if present.

    Returns {"status": "completed" | "diverged", "epochs": the final schedule length,
    "diverged_step": global 0-based step or None, "diverged_trace": the losses of the diverging
    epoch's steps up to and including that step, "metrics": one dict per epoch run, "engine",
    "earlier_segments_s": the wall seconds spent before this call resumed it (0 if it did not)}.
    """
    return train_together([cfg], data, [seed], checkpoint, progress, on_epoch_end, compile, memory_format)[0]


def train_together(cfgs: list[TrainConfig], data: Cifar10, seeds: list[int],
                   checkpoint: Path | None = None, progress: bool = True,
                   on_epoch_end: Callable[[int], None] | None = None, compile: bool = False,
                   memory_format: str = "channels_last") -> list[dict]:
    """Train K runs at once (`Runs`), each with its own config and seed; returns each run's result
    as `train` does, equal (to float rounding) to training it alone. A run that diverges or ends
    its schedule stops learning (rate 0) while the others go on; the rest of its epochs is not
    recorded. `on_epoch_end(epochs done)` is called after each epoch's checkpoint. `memory_format`
    (MEMORY_FORMATS) is the layout of the network and its batches: the same arithmetic summed in
    another order, so a run in the other layout is a rounding-level twin of the default one."""
    if len(cfgs) != len(seeds) or not cfgs:
        raise ValueError(f"one seed per config: got {len(cfgs)} configs and {len(seeds)} seeds")
    device = data.train_x.device
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    runs = Runs(cfgs, seeds, device, MEMORY_FORMATS[memory_format])
    if compile:
        runs.forward = torch.compile(runs.model)
    loaders = [TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfgs[0].batch_size, seed)
               for seed in seeds]
    steps = min(len(loaders[0]), cfgs[0].steps_per_epoch or len(loaders[0]))
    states = [RunState(total_epochs=cfg.epochs) for cfg in cfgs]
    if checkpoint is not None and checkpoint.exists():
        states = load_checkpoint(checkpoint, cfgs, seeds, runs)
    segment_start, earlier_s = time.perf_counter(), states[0].elapsed_s  # earlier: before a resume
    names = ", ".join(f"lr={c.lr:g} seed={s}" for c, s in zip(cfgs, seeds))
    bar = tqdm(total=max(s.total_epochs for s in states), initial=states[0].epoch,
               disable=not progress, desc=f"{cfgs[0].arch} bn={cfgs[0].bn} {names}", leave=False)
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
    engine = {"runs_together": len(cfgs), "compiled": compile, "precision": cfgs[0].precision,
              "memory_format": "channels_last" if runs.memory_format == torch.channels_last else "nchw"}
    return [{**s.result.stored(), "epochs": s.total_epochs, "initial_loss": s.initial_loss,
             "first_above_step": s.first_above_step, "metrics": s.metrics, "engine": engine,
             "earlier_segments_s": earlier_s} for s in states]


def run_epoch(cfgs: list[TrainConfig], runs: Runs, loaders: list[TrainLoader], data: Cifar10,
              states: list[RunState], steps: int) -> None:
    """Train and evaluate one epoch of every run still going; update their states in place:
    the paper's loop of rates, SGD steps, evaluation, divergence and the doubling rule."""
    epoch = states[0].epoch
    active = [s.active for s in states]
    lrs = [lr_at(c, epoch, s.total_epochs) for c, s in zip(cfgs, states)]
    runs.set_lrs([lr if a else 0.0 for lr, a in zip(lrs, active)])
    first_update_step = 1 if epoch == 0 else 0  # step 0 of epoch 0 is measured before any update
    device = loaders[0].x.device
    initial = None if epoch == 0 else torch.tensor([s.initial_loss for s in states], device=device)
    active_mask = torch.tensor(active, device=device)

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
    healths = network_health(runs, data, cfgs[0].record_health) if cfgs[0].record_health else None
    for k, (cfg, state) in enumerate(zip(cfgs, states)):
        state.epoch = epoch + 1
        if not active[k]:
            continue
        if state.first_above_step is None and (first := first_step(above[:, k])) is not None:
            state.first_above_step = epoch * steps + first
        bad_step = first_step(bad[:, k])
        ok = bad_step is None
        state.metrics.append({
            "epoch": epoch + 1, "lr": lrs[k], "steps": done,
            "train_loss": train_losses[k] if ok else None, "train_acc": train_accs[k],
            "test_loss": test_losses[k] if ok else None, "test_acc": test_accs[k] if ok else None,
            "wall_s": wall_s})
        if epoch < cfg.record_step_losses:
            state.metrics[-1]["step_losses"] = step_losses[:, k].tolist()
        if healths is not None:
            state.metrics[-1]["health"] = healths[k]
        if not ok:
            state.result = RunEnd("diverged", "diverged", epoch * steps + bad_step, epoch + 1,
                                  step_losses[:bad_step + 1, k].tolist())
            continue
        losses = [m["train_loss"] for m in state.metrics]
        state.total_epochs = next_total_epochs(cfg, state.epoch, state.total_epochs, losses)
        if state.epoch >= state.total_epochs:
            state.result = RunEnd("completed", learning_failure(state.initial_loss, state.metrics,
                                                                cfg.chance_accuracy))


def learning_failure(initial_loss: float, metrics: list[dict],
                     chance_accuracy: float = CHANCE_ACCURACY) -> str | None:
    """Why a run that did not diverge still failed to learn, or None (see the module docstring)."""
    if not metrics[-1]["train_loss"] < initial_loss:
        return "train loss not below the initial loss"
    if metrics[-1]["test_acc"] <= chance_accuracy:
        return "final test accuracy at chance"
    return None


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


def run_training(cfg: TrainConfig, seed: int = 0, experiment: str = "train", data_dir=None, *,
                 device=None, recompute: bool = False, progress: bool = True, compile: bool = False,
                 store: Store | None = None, wait: bool = True, memory_format: str = "channels_last") -> dict | None:
    """One stored training run: loaded from the store if complete, else trained (resuming from its
    checkpoint if a previous attempt was interrupted) and stored. With `wait=False`, a run that
    another process is training is left to it: None. The memory layout is not part of a run's
    identity: a run in another layout than the default belongs in an experiment of its own."""
    store = store or Store()
    checkpoint = store.checkpoint(experiment, cfg, seed)
    if recompute:
        checkpoint.unlink(missing_ok=True)
    run = get_or_measure(experiment, cfg, seed,
                         lambda data: train(cfg, data, seed, checkpoint, progress, compile=compile,
                                            memory_format=memory_format),
                         data_dir, device, recompute, store, wait)
    if run is not None:  # a stored run's checkpoint is never resumed again, nor written
        checkpoint.unlink(missing_ok=True)
        remove_stale_temps(checkpoint, older_than_s=0)
    return run


def run_together(cfgs: list[TrainConfig], seed: int, experiment: str, data_dir=None, *, device=None,
                 progress: bool = True, compile: bool = False, store: Store | None = None) -> None:
    """Train the runs of `cfgs` (one seed) missing from the store together (`train_together`), with
    one checkpoint for the batch, and store each run with the batch's provenance. Each run is taken
    under its lock without waiting: a run another process holds is left to it (`run_grid` then
    waits for it and loads it), so two processes never train, or store, one run twice."""
    store = store or Store()
    with contextlib.ExitStack() as locks:
        taken = []
        for cfg in cfgs:
            if store.get(experiment, cfg, seed) is None:
                lock = locks.enter_context(store.lock(experiment, cfg, seed, wait=False))
                if lock is not None and store.get(experiment, cfg, seed) is None:  # re-checked under the lock
                    taken.append((cfg, lock))
        if not taken:
            return
        store.check_writable(experiment)
        code = code_version()  # refused before training if the code is not committed
        missing = [cfg for cfg, _ in taken]
        device = torch.device(device or default_device())
        data = load_data(missing[0], data_dir, device)
        key = hashlib.sha256(" ".join(config_hash(c) for c in missing).encode()).hexdigest()[:12]
        checkpoint = store.checkpoint(experiment, missing[0], seed).parent.with_name(f"together-{key}")
        checkpoint = checkpoint / f"seed{seed}.pt"
        start = time.perf_counter()
        results = train_together(missing, data, [seed] * len(missing), checkpoint, progress, compile=compile)
        for (cfg, lock), result in zip(taken, results):
            duration = time.perf_counter() - start + result.pop("earlier_segments_s")
            store.put(experiment, cfg, seed, result, device, duration, data.source, code)
            lock.unlink(missing_ok=True)
        checkpoint.unlink(missing_ok=True)
        remove_stale_temps(checkpoint, older_than_s=0)


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


def run_grid(configs: list[TrainConfig], seed: int, experiment: str, data_dir=None, *, device=None,
             progress: bool = True, together: int = 1, compile: bool = False,
             store: Store | None = None) -> list[dict]:
    """Every config's stored run for `seed`, training what is missing, `together` runs at a time
    where they can share one model (`train_together`); an interrupted grid resumes where it stopped
    (stored runs are loaded, interrupted ones continue from their checkpoint). Runs that another
    process is training are skipped at first and waited for at the end, so that N processes given
    one grid train N different runs at a time."""
    kwargs = dict(device=device, progress=progress, compile=compile, store=store or Store())
    if together > 1:
        for group in together_groups(configs, together):
            run_together(group, seed, experiment, data_dir, **kwargs)
    runs = [run_training(cfg, seed, experiment, data_dir, wait=False, **kwargs) for cfg in configs]
    return [run or run_training(cfg, seed, experiment, data_dir, **kwargs) for cfg, run in zip(configs, runs)]


def command_line():
    """The training command's arguments (`main`)."""
    import argparse

    from .config import GRIDS, PRECISIONS, TRAIN_PRESETS
    from .experiments import device_arg, positive_int_arg, seed_arg
    from .launch import LAUNCHERS, LaunchOptions

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("grids", nargs="+", choices=sorted(GRIDS))
    parser.add_argument("--preset", default="cpu", choices=list(TRAIN_PRESETS))
    parser.add_argument("--seeds", type=seed_arg, nargs="+", default=[0])
    parser.add_argument("--rates-per-decade", type=int, default=1, choices=(1, 2), help="sweep only")
    parser.add_argument("--together", type=positive_int_arg, default=1, help="runs trained as one stacked network")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--precision", default=None, choices=(*PRECISIONS, AUTO),
                        help="instead of the preset's (fp32): auto is bf16 on a CPU with bf16 units, else fp32")
    parser.add_argument("--device", type=device_arg, default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--settings", nargs="+", default=None, metavar="SETTING",
                        help='only these settings of the grids, e.g. "BN, lr 0.1" "no BN, lr 0.0001"')
    jobs = parser.add_argument_group("jobs (shared.launch; default: train in this process)")
    defaults = LaunchOptions()
    jobs.add_argument("--launcher", default=None, choices=LAUNCHERS,
                      help="slurm: a job array; local: worker processes; debug: jobs in this process")
    jobs.add_argument("--status", action="store_true", help="list the grids' stored, running, failed, missing runs")
    jobs.add_argument("--max-parallel", type=positive_int_arg, default=defaults.max_parallel,
                      help="jobs at once (SLURM array parallelism, local workers)")
    jobs.add_argument("--time-min", type=positive_int_arg, default=defaults.time_min,
                      help="a job's time limit in minutes (SLURM requeues it from its checkpoint)")
    jobs.add_argument("--partition", default=None, help="SLURM partition")
    jobs.add_argument("--gpus-per-job", type=int, default=defaults.gpus_per_job, help="SLURM")
    jobs.add_argument("--cpus-per-job", type=positive_int_arg, default=defaults.cpus_per_job, help="SLURM")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Train a grid of runs into the results store, on the GPU if there is one, resumable, e.g.
    `python -m shared.train fig1 sweep divergence --preset cpu --seeds 0 1` or, on a GPU,
    `python -m shared.train fig1 --preset quick --seeds 0 1 --together 6 --compile`; as SLURM
    jobs with `--launcher slurm` (`shared.launch`), followed with `--status`."""
    from .config import GRIDS, TRAINING_EXPERIMENT, setting_name
    from .launch import LaunchOptions, Run, format_status, launch, status

    parser = command_line()
    args = parser.parse_args(argv)
    overrides = {}
    if args.precision is not None:
        overrides["precision"] = resolve_precision(args.precision, args.device or default_device())
    grids = [(name, seed, GRIDS[name](args.preset, **overrides,
                                      **({"rates_per_decade": args.rates_per_decade} if name == "sweep" else {})))
             for seed in args.seeds for name in args.grids]
    if args.settings:
        names = {setting_name(cfg) for _, _, grid in grids for cfg in grid}
        for wanted in args.settings:
            if wanted not in names:
                parser.error(f"unknown setting {wanted!r}; valid: {', '.join(sorted(names))}")
        grids = [(name, seed, [c for c in grid if setting_name(c) in args.settings]) for name, seed, grid in grids]
    if args.status or args.launcher:
        runs = list(dict.fromkeys(Run(cfg, seed) for _, seed, grid in grids for cfg in grid))
        if args.launcher:
            options = LaunchOptions(args.launcher, args.max_parallel, args.time_min, args.partition,
                                    args.gpus_per_job, args.cpus_per_job)
            jobs = launch(runs, TRAINING_EXPERIMENT, options, args.data_dir, args.device, args.compile)
            print(f"{len(jobs)} {args.launcher} jobs" + (f": {', '.join(j.job_id for j in jobs)}" if jobs else ""))
        print(format_status(status(runs, TRAINING_EXPERIMENT, Store())), flush=True)
        return
    for name, seed, grid in grids:
        start = time.perf_counter()
        runs = run_grid(grid, seed, TRAINING_EXPERIMENT, args.data_dir, device=args.device,
                        together=args.together, compile=args.compile)
        statuses = ", ".join(f"{c.lr:g}{'' if c.bn else ' no BN'}: {r['result']['status']}"
                             for c, r in zip(grid, runs))
        print(f"{name} preset {args.preset} seed {seed}: {len(runs)} runs in "
              f"{time.perf_counter() - start:.0f} s ({statuses})", flush=True)


if __name__ == "__main__":
    main()
