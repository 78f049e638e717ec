"""Get a run from the store, or compute and store it: the one place that calls down into the data,
the device and a measurement, then puts the result.

An entry point (the training and experiments commands, a notebook's parameters, a launcher's job)
makes one `RunContext`, where the runs go and how they are computed, and passes it down; nothing
below calls back up. The store itself (`shared.results.Store`) only keeps runs.
"""

from dataclasses import dataclass, field
from typing import Callable

from .results import Store, get_or_measure


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


def measured(experiment: str, cfg, seed: int, measure: Callable, ctx: RunContext | None = None,
             needs_data: bool = True) -> dict | None:
    """The stored run of `experiment` for (cfg, seed), else `measure(cfg, data, seed)` computed
    under `ctx` and stored (`measure(cfg, seed)` where it `needs_data` not)."""
    ctx = ctx or RunContext()
    if not needs_data:
        return ctx.store.get_or_compute(experiment, cfg, seed, lambda: measure(cfg, seed), "cpu",
                                        recompute=ctx.recompute)
    return get_or_measure(experiment, cfg, seed, lambda data: measure(cfg, data, seed), ctx.data_dir,
                          ctx.device, ctx.recompute, ctx.store, ctx.wait)
