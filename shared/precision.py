"""Numerical precision of training: strict fp32, TF32, or bf16 autocast, and what the CPU offers.

Three precisions (`shared.config.PRECISIONS`), part of every run's identity:

  fp32   strict float32: TF32 off for matrix products and convolutions (the default, faithful);
  tf32   TF32 matrix products and convolutions (NVIDIA GPUs; the same as fp32 on a CPU);
  bf16   mixed precision: the forward pass and the loss under `torch.autocast(dtype=bfloat16)`,
         the weights, their gradients, the optimizer and BatchNorm's statistics in float32.

How bf16 must be used (the PyTorch AMP recipe). Autocast caches the bf16 copy it makes of each
weight and clears the cache only when the *outermost* autocast region exits. One region around a
whole training loop therefore keeps feeding every forward pass the bf16 copies of the *initial*
weights while the optimizer updates the float32 ones: nothing trains. So `autocast` is entered
around each step's forward pass and loss only, and around each evaluation on its own; backward and
the optimizer step run outside it. `tf32_setting` (a process-wide switch, no cache) may wrap the
whole loop.

bf16 pays on a CPU only where its bf16 matrix products outrun fp32's. The flags of bf16 units
(`cpu_bf16_units`: AVX512-BF16, AMX-BF16) are necessary, not sufficient. Measured on three machines
of this project (2 threads, a 2048 matrix product, and a ResNet-110 step with BN against fp32 NCHW):
an Intel Xeon with AMX ran bf16 at 3.8x the fp32 rate and the step 2.1x faster; an AMD EPYC with
AVX512-BF16 alone 2.4x and 2.1x; but an Intel Xeon whose virtual machine shows AVX512-BF16 and
not AMX 0.53x and 0.87x (0.155 against 0.291 TFLOP/s: bf16 was slower). So
`resolve_precision("auto")` picks bf16 only where the CPU has bf16 units *and* a bf16 matrix
product, timed once per process (`cpu_bf16_speedup`), runs at least `BF16_MIN_SPEEDUP` times the
fp32 rate; else fp32. It says which, and why, once per process.
"""

import contextlib
import functools
import time
from pathlib import Path

import torch

from .config import PRECISIONS, check_choice

AUTO = "auto"  # a request, resolved by `resolve_precision` into one of PRECISIONS
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of the CPU's bf16 units
BF16_MIN_SPEEDUP = 1.5  # how much faster than fp32 a bf16 matrix product must run for "auto" to pick bf16


@contextlib.contextmanager
def tf32_setting(precision: str):
    """TF32 on for "tf32", off otherwise (strict fp32), restored on exit."""
    check_choice("precision", precision, PRECISIONS)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(precision: str, device: torch.device):
    """The autocast region of one forward pass (+ loss): bf16 for "bf16", a no-op otherwise.
    Enter it per step, never around a loop of optimizer steps (see the module docstring)."""
    check_choice("precision", precision, PRECISIONS)
    return torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bf16")


@functools.cache
def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (Linux), or {} where it cannot be read."""
    info = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags, empty where they cannot be read."""
    return frozenset(cpu_info(cpuinfo).get("flags", "").split())


def cpu_bf16_units(flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The CPU's bf16 arithmetic units by flag name (BF16_CPU_FLAGS), empty if it has none."""
    flags = cpu_flags() if flags is None else flags
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def cpu_capability() -> dict:
    """What the provenance records of the CPU: its model, bf16 units and the threads torch uses."""
    return {"model": cpu_info().get("model name", "unknown"), "bf16_units": list(cpu_bf16_units()),
            "threads": torch.get_num_threads()}


def matmul_rate(precision: str, device: torch.device | str = "cpu", size: int = 1024,
                seconds: float = 0.25) -> float:
    """FLOP/s of a [size, size] @ [size, size] product in `precision` (bf16: bf16 inputs) on
    `device`, timed for at least `seconds` after one warm-up product."""
    check_choice("precision", precision, PRECISIONS)
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    a, b = (torch.randn(size, size, device=device,
                        dtype=torch.bfloat16 if precision == "bf16" else torch.float32) for _ in range(2))
    with tf32_setting(precision):
        a @ b
        sync()
        reps, start = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        sync()
    return 2 * size ** 3 * reps / (time.perf_counter() - start)


@functools.cache
def cpu_bf16_speedup() -> float:
    """This CPU's bf16 matrix-product rate over its fp32 rate, measured once per process (well
    under a second at 1024 x 1024)."""
    return matmul_rate("bf16") / matmul_rate("fp32")


@functools.cache
def _say_once(message: str) -> None:
    print(message, flush=True)


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """One of PRECISIONS for `requested` (one of them, or "auto"). "auto" on a CPU: bf16 where it
    has bf16 units and its bf16 matrix product runs at least BF16_MIN_SPEEDUP times as fast as
    fp32's, else fp32 (said once, with the reason); on a GPU: fp32, the faithful default."""
    check_choice("precision", requested, (*PRECISIONS, AUTO))
    if requested != AUTO:
        return requested
    if torch.device(device).type != "cpu":
        return "fp32"
    units = cpu_bf16_units()
    if not units:
        _say_once(f"precision auto: fp32 (the CPU has no bf16 units: none of {', '.join(BF16_CPU_FLAGS)})")
        return "fp32"
    speedup = cpu_bf16_speedup()
    pays = speedup >= BF16_MIN_SPEEDUP
    _say_once(f"precision auto: {'bf16' if pays else 'fp32'} (the CPU has bf16 units: {', '.join(units)}; "
              f"its bf16 matrix product runs at {speedup:.2f}x the fp32 rate, "
              f"{'at least' if pays else 'below'} the {BF16_MIN_SPEEDUP}x that bf16 needs to pay)")
    return "bf16" if pays else "fp32"
