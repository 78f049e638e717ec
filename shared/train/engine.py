"""The engine: K training runs as one stacked network, their SGD, one epoch of steps, evaluation.

`Runs` holds K runs of one architecture that differ in seed, learning rate or schedule length as
one model (K = 1: a single network with torch's SGD; else the K networks stacked with grouped
convolutions, `shared.models.stack_models`, and `StackedSGD`, each run with its own rate), in a
memory layout (`MEMORY_FORMATS`: channels-last is faster on a CPU) and a precision
(`shared.precision`: under bf16 each step's forward pass and loss, and each evaluation, is its own
autocast region; backward and the optimizer step run outside it). Within an epoch there is no
host synchronisation: losses and correct counts accumulate on the device.
"""

from dataclasses import fields
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import TrainConfig, network_fields
from ..data import Cifar10, TrainLoader, eval_batches
from ..health import health
from ..models import CIFAR_DEPTHS, build_model, stack_models
from ..precision import autocast


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
        # the sum over an epoch's steps of each run's gradient norm (`train_epoch`), where the
        # config asks for the network's health; None: not measured
        self.grad_norm_sum = torch.zeros(self.count, device=device) if cfg.record_health else None

    def add_grad_norms(self) -> None:
        """Add each run's global gradient norm (its rows of every stacked parameter) to `grad_norm_sum`."""
        squares = [p.grad.unflatten(0, (self.count, -1)).flatten(1).float().pow(2).sum(1)
                   for p in self.model.parameters() if p.grad is not None]
        self.grad_norm_sum += torch.stack(squares).sum(0).sqrt()

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
STACK_MAY_DIFFER = ("lr", "epochs", "max_epochs", "warmup_epochs")


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
        if runs.grad_norm_sum is not None:
            runs.add_grad_norms()
        runs.optimizer.step()
        step_losses[i] = losses.detach()
        correct += (logits.detach().argmax(2) == y.T).sum(0)
        done = i + 1
        if stop_when is not None and done % check_every == 0 and stop_when(step_losses[:done]):
            break
    return step_losses[:done], correct


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


def network_health(runs: Runs, data: Cifar10, images: int, steps: int) -> list[dict]:
    """Per run, `shared.health.health` on the first `images` test images (not augmented), in the
    runs' precision: dead ReLUs per stage, the logits' spread across images, the classifier's
    input; and "grad_norm", the gradient's global norm averaged over the epoch's `steps` steps
    (then reset for the next epoch)."""
    x, _ = next(eval_batches(data.test_x[:images], data.test_y[:images], data.mean, data.std, images))
    with autocast(runs.precision, x.device):
        found = health(runs.model, x.repeat(1, runs.count, 1, 1).contiguous(memory_format=runs.memory_format),
                       runs.count)
    for k, norm in enumerate((runs.grad_norm_sum / steps).tolist()):
        found[k]["grad_norm"] = norm
    runs.grad_norm_sum.zero_()
    return found
