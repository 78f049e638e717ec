"""Small stand-ins shared by the training tests."""

import torch

from shared import compute as compute_module
from shared.compute import RunContext
from shared.data import Cifar10, channel_stats
from shared.provenance import provenance


def random_cifar(n_train=128, n_test=40, seed=0) -> Cifar10:
    """A random stand-in for CIFAR-10 (labels learnable from the mean colour) for fast CPU tests."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    x[:, 0] = (x[:, 0] // 2 + 12 * y[:, None, None]).to(torch.uint8)
    mean, std = channel_stats(x[:n_train])
    return Cifar10(x[:n_train], y[:n_train], x[n_train:], y[n_train:], mean, std, "random")


# the training loop's context in tests: no progress bars (the loop reads only the progress bar,
# `torch.compile` and the memory layout of a context, never its store)
QUIET = RunContext(progress=False)


def context(store, data_dir=None, **fields) -> RunContext:
    """A run context for tests: runs in `store`, from the CIFAR-10 copy `data_dir`, on the CPU,
    without progress bars."""
    return RunContext(store, data_dir, "cpu", progress=False, **fields)


TINY = dict(arch="resnet20", batch_size=32, eval_batch_size=40, train_subset=None,
            test_subset=None, steps_per_epoch=None)


def get_or_compute(store, experiment, cfg, seed, compute, device="cpu", data=None, recompute=False, wait=True):
    """`shared.compute.get_or_compute` in `store` with a context made of these arguments."""
    ctx = RunContext(store, device=device, recompute=recompute, wait=wait)
    return compute_module.get_or_compute(experiment, cfg, seed, compute, ctx, data)


def put(store, experiment, cfg, seed, result, device="cpu", duration_s=1.0, data=None, overwrite=False):
    """`result` stored in `store` with the provenance the computation would give it (today's code)."""
    record = provenance(cfg, seed, device, duration_s, data)
    return store.put(experiment, cfg, seed, compute_module.stored_run(result, record, None), overwrite)
