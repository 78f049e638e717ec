"""The networks measured at initialisation, and the mini-batch they are measured on.

Networks come in pairs: for a seed, the network with BN and the same network with its BN layers
removed share every convolution weight (`shared.models.build_model`), so each run compares the two
directly. The mini-batch is the first one of the seed's first training epoch (augmented, as
training sees it).
"""

import torch

from .config import ProbeConfig, network_fields
from .data import Cifar10, TrainLoader
from .models import build_model, weight_layers


def middle_layer(model) -> int:
    return (len(weight_layers(model)) + 1) // 2


def network_pair(cfg: ProbeConfig, seed: int, device) -> dict[str, torch.nn.Module]:
    """{"bn": ..., "no_bn": ...}: the seed's network with BN and the same weights without; for a
    normalisation-free residual scheme (`cfg.residual`), {"no_bn": that network} alone."""
    pair = {}
    networks = {"bn": True, "no_bn": False} if cfg.residual == "plain" else {"no_bn": False}
    for name, bn in networks.items():
        torch.manual_seed(seed)
        pair[name] = build_model(bn=bn, **network_fields(cfg)).to(device).train()
    return pair


def first_batch(cfg: ProbeConfig, data: Cifar10, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return next(TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfg.batch_size, seed).epoch(0))
