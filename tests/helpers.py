"""Small stand-ins shared by the training tests."""

import torch

from shared.data import Cifar10, channel_stats


def random_cifar(n_train=128, n_test=40, seed=0) -> Cifar10:
    """A random stand-in for CIFAR-10 (labels learnable from the mean colour) for fast CPU tests."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    x[:, 0] = (x[:, 0] // 2 + 12 * y[:, None, None]).to(torch.uint8)
    mean, std = channel_stats(x[:n_train])
    return Cifar10(x[:n_train], y[:n_train], x[n_train:], y[n_train:], mean, std, "random")


TINY = dict(arch="resnet20", batch_size=32, eval_batch_size=40, train_subset=None,
            test_subset=None, steps_per_epoch=None)
