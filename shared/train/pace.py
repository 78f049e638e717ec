"""No silent slow path: a run is not started on a CPU where its precision crawls.

bf16 pays on CPUs with AMX or AVX512-BF16 (2.1-2.4x fp32 on a ResNet-110 step), but on a CPU
without bf16 units PyTorch's bf16 convolutions take a slow path: on an AMD EPYC with AVX2 only a
ResNet-110 step took 26.9 s in bf16 against 2.1 s in fp32 (`docs/costs.md`). The `cpu` preset
trains in bf16 (its stored runs are bf16, and precision is part of a run's key), so on such a CPU
computing one of its runs would silently take a dozen times longer than it need.

`check_pace` is asked before any run is computed on a CPU. Where bf16's matrix product runs below
`SLOW_RATIO` of fp32's rate (`shared.precision.cpu_bf16_speedup`, measured once per process), it
times one small training step in each precision, estimates what each missing run would take under
each, and refuses to start unless bf16 was asked for explicitly (`--precision bf16`); `--precision
auto` picks the precision that pays instead. Reading stored runs never depends on the CPU.
"""

import functools
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..config import TrainConfig
from ..models import build_model
from ..precision import autocast, cpu_bf16_speedup, cpu_info

SLOW_RATIO = 1 / 3  # bf16 below this fraction of fp32's matrix-product rate: too slow to start unasked
PROBE_ARCH, PROBE_BATCH = "resnet20", 32  # the step timed for the estimate


class SlowPrecisionError(RuntimeError):
    """The runs' precision runs far slower on this CPU than the other precision."""


@functools.cache
def step_seconds(precision: str) -> float:
    """Seconds of one training step (forward, loss, backward, SGD) of ResNet-20 at batch 32 on
    this CPU in `precision`, channels-last, after one warm-up step."""
    model = build_model(PROBE_ARCH, bn=True).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(PROBE_BATCH, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(PROBE_BATCH, dtype=torch.long)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with autocast(precision, x.device):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


@functools.cache
def training_flops_per_image(arch: str, bn: bool = True) -> float:
    """FLOPs of one training step per image (forward, loss and backward; 2 per multiply-add)."""
    model = build_model(arch, bn)
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / len(x)


def estimated_seconds(cfg: TrainConfig, precision: str, train_images: int = 50_000) -> float:
    """A run of `cfg` in `precision` on this CPU, estimated from one timed ResNet-20 step scaled by
    the FLOPs of `cfg`'s network and schedule (its epochs, its images; evaluation not counted)."""
    images = min(cfg.train_subset or train_images, train_images)
    if cfg.steps_per_epoch is not None:
        images = min(images, cfg.steps_per_epoch * cfg.batch_size)
    per_image = step_seconds(precision) / PROBE_BATCH
    return per_image * training_flops_per_image(cfg.arch, cfg.bn) / training_flops_per_image(PROBE_ARCH) * images * cfg.epochs


def check_pace(cfgs: list[TrainConfig], device, explicit: bool = False) -> None:
    """Refuse (SlowPrecisionError) to start the runs of `cfgs` (those about to be computed) on a CPU
    where bf16 runs below SLOW_RATIO of fp32's rate, naming the estimated time per run under each
    precision, unless bf16 was asked for `explicit`ly (then it says so and goes on)."""
    slow = [c for c in cfgs if c.precision == "bf16"]
    if not slow or torch.device(device).type != "cpu" or (speedup := cpu_bf16_speedup()) >= SLOW_RATIO:
        return
    hours = {p: max(estimated_seconds(c, p) for c in slow) / 3600 for p in ("bf16", "fp32")}
    message = (f"bf16 runs at {speedup:.2g}x fp32's matrix-product rate on this CPU "
               f"({cpu_info().get('model name', 'unknown')}): a run of these {len(slow)} would take about "
               f"{hours['bf16']:.1f} h in bf16 against {hours['fp32']:.1f} h in fp32 (estimated from one timed "
               "training step in each).")
    if explicit:
        print(message + " Going on: bf16 was asked for.", flush=True)
        return
    raise SlowPrecisionError(
        message + " Not started. Ask for it with --precision bf16 (to compute the stored preset's runs "
        "as they are), or train in the precision that pays here with --precision auto or fp32 "
        "(runs of their own: precision is part of a run's key).")
