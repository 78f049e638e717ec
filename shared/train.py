"""Training as in the paper's appendix B, resumable, with divergence recorded as a result.

`train` runs SGD on a `Cifar10` held on the device. Per epoch it records train loss/accuracy (on
the augmented mini-batches, as the paper's Fig 1 does), test loss/accuracy, the learning rate and
the wall time. Divergence, as the paper defines it (Sec. 2: a mini-batch loss above 1e3; we also
count a non-finite loss), ends the run with status "diverged" and the step where it happened.

Networks and batches are laid out channels-last (NHWC): the same arithmetic as the default layout,
faster on CPU (benchmarks/train_speed.py measures both).

Within an epoch there is no host synchronisation: losses and correct counts accumulate on the
device and are read once at the end of the epoch. A checkpoint is written atomically after every
epoch; since the data order of an epoch is a pure function of (seed, epoch) (`TrainLoader`), a
killed run resumed from its checkpoint continues exactly as if it had not been interrupted.
"""

import contextlib
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import Cifar10, TrainLoader, eval_batches
from .models import build_model
from .fileio import save_torch_atomic
from .results import checkpoint_path, config_hash, stored_run


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


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """fp32: strict float32 (TF32 off); tf32: TF32 matmuls/convolutions; bf16: bf16 autocast."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def evaluate(model: torch.nn.Module, data: Cifar10, batch_size: int) -> tuple[float, float]:
    """Test loss and accuracy without augmentation, BN in inference mode."""
    model.eval()
    loss_sum = torch.zeros((), device=data.test_x.device)
    correct = torch.zeros((), device=data.test_x.device, dtype=torch.long)
    with torch.no_grad():
        for x, y in eval_batches(data.test_x, data.test_y, data.mean, data.std, batch_size):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    n = len(data.test_y)
    return loss_sum.item() / n, correct.item() / n


def train_epoch(model, optimizer, loader: TrainLoader, epoch: int, steps: int):
    """One epoch of SGD; returns the per-step losses and the correct count, on the device."""
    model.train()
    device = loader.x.device
    step_losses = torch.zeros(steps, device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for i, (x, y) in zip(range(steps), loader.epoch(epoch)):
        logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_losses[i] = loss.detach()
        correct += (logits.detach().argmax(1) == y).sum()
    return step_losses, correct


def first_divergent_step(step_losses: torch.Tensor, threshold: float) -> int | None:
    bad = ~torch.isfinite(step_losses) | (step_losses > threshold)
    return int(bad.nonzero()[0]) if bad.any() else None


def train(cfg: TrainConfig, data: Cifar10, seed: int = 0, checkpoint: Path | None = None,
          progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train one network on `data` (already on its device); resume from `checkpoint` if present.

    Returns {"status": "completed" | "diverged", "epochs": the final schedule length,
    "diverged_step": global 0-based step or None, "diverged_trace": the losses of the diverging
    epoch's steps up to and including that step, "metrics": one dict per epoch run}.
    """
    device = data.train_x.device
    torch.manual_seed(seed)
    model = build_model(cfg.arch, cfg.bn, cfg.init).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    loader = TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfg.batch_size, seed)
    steps = min(len(loader), cfg.steps_per_epoch or len(loader))
    state = {"epoch": 0, "total_epochs": cfg.epochs, "metrics": [], "result": None}
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, cfg, model, optimizer)
    bar = tqdm(total=state["total_epochs"], initial=state["epoch"], disable=not progress,
               desc=f"{cfg.arch} bn={cfg.bn} lr={cfg.lr:g} seed={seed}", leave=False)
    with precision_context(cfg.precision, device):
        while state["result"] is None:
            epoch_metrics, divergence = run_epoch(cfg, model, optimizer, loader, data, state, steps)
            state["metrics"].append(epoch_metrics)
            state["epoch"] += 1
            if divergence is not None:
                state["result"] = {"status": "diverged", **divergence}
            else:
                losses = [m["train_loss"] for m in state["metrics"]]
                state["total_epochs"] = next_total_epochs(cfg, state["epoch"], state["total_epochs"], losses)
                if state["epoch"] >= state["total_epochs"]:
                    state["result"] = {"status": "completed", "diverged_step": None, "diverged_trace": []}
            if checkpoint is not None:
                save_torch_atomic(checkpoint, {**state, "model": model.state_dict(),
                                             "optimizer": optimizer.state_dict(),
                                             "config_hash": config_hash(cfg)})
            bar.total = state["total_epochs"]
            bar.update(1)
            bar.set_postfix(loss=epoch_metrics["train_loss"], test_acc=epoch_metrics["test_acc"])
            if on_epoch_end is not None:
                on_epoch_end(epoch_metrics)
    bar.close()
    return {**state["result"], "epochs": state["total_epochs"], "metrics": state["metrics"]}


def run_epoch(cfg, model, optimizer, loader, data, state, steps):
    """Train and evaluate one epoch; returns its metrics and the divergence (or None)."""
    epoch = state["epoch"]
    lr = lr_at(cfg, epoch, state["total_epochs"])
    for group in optimizer.param_groups:
        group["lr"] = lr
    start = time.perf_counter()
    step_losses, correct = train_epoch(model, optimizer, loader, epoch, steps)
    n_seen = min(steps * cfg.batch_size, len(data.train_y))
    batch_sizes = torch.full((steps,), cfg.batch_size, device=step_losses.device)
    batch_sizes[-1] = n_seen - (steps - 1) * cfg.batch_size  # the last partial batch is kept
    bad = first_divergent_step(step_losses, cfg.divergence_loss)
    train_loss = (step_losses * batch_sizes).sum().item() / n_seen if bad is None else None
    test_loss, test_acc = evaluate(model, data, cfg.eval_batch_size) if bad is None else (None, None)
    metrics = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
               "train_acc": correct.item() / n_seen, "test_loss": test_loss, "test_acc": test_acc,
               "wall_s": time.perf_counter() - start}
    if bad is None:
        return metrics, None
    trace = step_losses[:bad + 1].tolist()
    return metrics, {"diverged_step": epoch * steps + bad, "diverged_epoch": epoch + 1,
                     "diverged_trace": trace}


def load_checkpoint(path: Path, cfg: TrainConfig, model, optimizer) -> dict:
    """Restore model and optimizer from `path`; return the rest of the saved training state."""
    saved = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    if saved["config_hash"] != config_hash(cfg):
        raise ValueError(f"checkpoint {path} belongs to another config "
                         f"({saved['config_hash']}, expected {config_hash(cfg)})")
    model.load_state_dict(saved.pop("model"))
    optimizer.load_state_dict(saved.pop("optimizer"))
    saved.pop("config_hash")
    return saved


def run_training(cfg: TrainConfig, seed: int = 0, experiment: str = "train", data_dir=None,
                 device=None, recompute: bool = False, progress: bool = True,
                 root: Path | None = None, checkpoint_root: Path | None = None) -> dict:
    """One stored training run: loaded from the results store if complete, else trained (resuming
    from its checkpoint if a previous attempt was interrupted) and stored."""
    checkpoint = checkpoint_path(experiment, cfg, seed, checkpoint_root)
    if recompute:
        checkpoint.unlink(missing_ok=True)
    return stored_run(experiment, cfg, seed, lambda data: train(cfg, data, seed, checkpoint, progress),
                      data_dir, device, recompute, root, checkpoint_root)


def run_grid(configs: list[TrainConfig], seed: int, experiment: str, data_dir=None, device=None,
             progress: bool = True, root: Path | None = None,
             checkpoint_root: Path | None = None) -> list[dict]:
    """Every config's stored run for `seed`, training what is missing; an interrupted grid resumes
    where it stopped (completed runs are loaded, the interrupted one continues from its checkpoint)."""
    return [run_training(cfg, seed, experiment, data_dir, device, progress=progress, root=root,
                         checkpoint_root=checkpoint_root) for cfg in configs]
