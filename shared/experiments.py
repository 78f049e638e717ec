"""The paper's figures as experiments: a frozen config per figure, named presets, and a measure
function that turns (config, data, seed) into a small JSON-able result for the results store.

Networks measured at initialisation come in pairs: for a seed, the network with BN and the same
network with its BN layers removed share every convolution weight (`shared.models.build_model`),
so each run compares the two directly. The mini-batch is the first one of the seed's first
training epoch (augmented, as training sees it).
"""

import argparse
import time
from dataclasses import dataclass, fields, replace
from typing import get_args

import torch
import torch.nn.functional as F

from . import probes
from .data import Cifar10, TrainLoader
from .figures.collapse import EXPERIMENT as COLLAPSE, CollapseConfig, measure as measure_collapse
from .config import PROBE_PRESETS
from .config import ProbeConfig, added, check_fields, check_positive_fields, network_fields  # noqa: F401 (re-exported)
from .models import build_model, check_choice, weight_layers
from .results import Store, get_or_measure


@dataclass(frozen=True)
class GradientConfig(ProbeConfig):
    """Fig 2: the gradient of one layer's weights at initialisation."""
    layer: int | None = None  # None: the middle layer (55 of ResNet-110, 51 of ResNet-101)
    bins: int = 201


@dataclass(frozen=True)
class DepthConfig(ProbeConfig):
    """Fig 5: channel means and stds of layers 6, 18, ..., at initialisation."""
    channels: str = added("all")  # "all": averaged over the layer's channels; "first": channel 0 (the blog's)
    first_layer: int = added(6)   # the layers profiled: first_layer, + layer_step, ..., and the last
    layer_step: int = added(12)

    def __post_init__(self):
        super().__post_init__()
        check_choice("channels", self.channels, FIG5_CHANNELS)


FIG5_CHANNELS = ("all", "first")


@dataclass(frozen=True)
class SignalConfig(ProbeConfig):
    """Beyond the paper: Brock et al.'s (2021) signal propagation, per residual block, at initialisation."""


@dataclass(frozen=True)
class LogitGradientConfig(ProbeConfig):
    """Fig 6: gradients w.r.t. the logits at initialisation, one batch and an epoch's average."""
    epoch_batches: int | None = 50  # mini-batches averaged (6,400 images); None: a full epoch


@dataclass(frozen=True)
class ContributionConfig(ProbeConfig):
    """Table 1: per-example gradient contributions of a few convolution layers."""
    layers: tuple[int, ...] = (2, 20, 38, 55, 74, 92, 109)  # of ResNet-110; scaled to other depths


@dataclass(frozen=True)
class RelativeLossConfig(ProbeConfig):
    """Fig 3: relative loss along the gradient, probed while training at the normal rates."""
    lr_bn: float = 0.1
    lr_no_bn: float = 1e-4
    probe_batches: tuple[int, ...] = (1, 4, 7)  # 1-based mini-batch numbers of training
    sizes: int = 80                               # step sizes, log-spaced from 10^size_low to 10^size_high
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Two choices the paper leaves open (issue: Fig 3 ablation). The step: "gradient", a plain step
    # along the mini-batch gradient, or "update", along the optimiser's step per unit rate (momentum
    # buffer and weight decay included). The network probed at mini-batch k: "trained" after the
    # k - 1 preceding steps at the normal rate, or "init", every mini-batch at initialisation.
    direction: str = added("gradient")
    state: str = added("trained")
    # The networks' memory layout. "channels_last" is 1.3-1.7x faster on a CPU
    # (benchmarks/fig3_probe.py) but sums in another order: the network without BN gives the same
    # curves to 1e-4 and the same thresholds, while with BN, after steps at rate 0.1, rounding grows
    # to tens of percent of the relative loss. A run's layout is part of its identity, so that no
    # figure mixes the two.
    layout: str = added("nchw")
    size_low: float = added(-5.5)    # log10 of the smallest step size (the blog's sweep: 10^-5.5 .. 10^0.5)
    size_high: float = added(0.5)    # log10 of the largest

    def __post_init__(self):
        super().__post_init__()
        check_choice("direction", self.direction, FIG3_DIRECTIONS)
        check_choice("state", self.state, FIG3_STATES)
        check_choice("layout", self.layout, FIG3_LAYOUTS)
        if not self.size_low < self.size_high:
            raise ValueError(f"RelativeLossConfig: size_low ({self.size_low}) must be below size_high ({self.size_high})")


FIG3_DIRECTIONS = ("gradient", "update")
FIG3_STATES = ("trained", "init")
FIG3_LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class DivergingUpdateConfig(ProbeConfig):
    """Fig 4: channel moments of the no-BN network while a diverging update is applied."""
    lr: float = 3e-3  # a rate at which the no-BN network diverges (Fig 1's middle BN rate)
    layers: tuple[int, ...] = (8, 44, 80)  # of ResNet-110; scaled to other depths
    fractions: int = 21                           # 0 %, 5 %, ..., 100 % of the update


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


def measure_gradients(cfg: GradientConfig, data: Cifar10, seed: int) -> dict:
    x, y = first_batch(cfg, data, seed)
    result = {}
    for name, model in network_pair(cfg, seed, x.device).items():
        k = cfg.layer or middle_layer(model)
        g = probes.layer_weight_gradient(model, x, y, k)
        result[name] = {"layer": k, **probes.summary_stats(g), **probes.histogram(g, cfg.bins)}
    result["scale_ratio"] = result["no_bn"]["std"] / result["bn"]["std"]
    return result


def measure_depth_profile(cfg: DepthConfig, data: Cifar10, seed: int) -> dict:
    x, _ = first_batch(cfg, data, seed)
    result = {}
    for name, model in network_pair(cfg, seed, x.device).items():
        layers = probes.layers_to_profile(model, cfg.layer_step, cfg.first_layer)
        profile = probes.depth_profile(model, x, layers, cfg.channels)
        result[name] = {str(k): v for k, v in profile.items()}
    return result


def measure_signal_propagation(cfg: SignalConfig, data: Cifar10, seed: int) -> dict:
    x, _ = first_batch(cfg, data, seed)
    return {name: {str(b): v for b, v in probes.signal_propagation(model, x).items()}
            for name, model in network_pair(cfg, seed, x.device).items()}


def measure_logit_gradients(cfg: LogitGradientConfig, data: Cifar10, seed: int) -> dict:
    loader = TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfg.batch_size, seed)
    n_batches = min(cfg.epoch_batches or len(loader), len(loader))
    result = {}
    for name, model in network_pair(cfg, seed, data.train_x.device).items():
        batches = [probes.logit_gradients(model, x, y) for _, (x, y) in zip(range(n_batches), loader.epoch(0))]
        full = [g for g in batches if len(g) == cfg.batch_size]  # rows = positions in a full batch
        columns = torch.cat([g.argmax(1) for g in batches])
        counts = torch.bincount(columns, minlength=batches[0].shape[1])
        column, fraction = probes.dominant_column(batches[0])
        result[name] = {"first_batch": batches[0].cpu().tolist(),
                        "epoch_mean": torch.stack(full).mean(0).cpu().tolist(),
                        "dominant_column": column, "dominant_fraction": fraction,
                        "epoch_column_counts": counts.cpu().tolist(),
                        "epoch_dominant_fraction": counts.max().item() / len(columns),
                        "epoch_batches": len(batches)}
    return result


def measure_contributions(cfg: ContributionConfig, data: Cifar10, seed: int) -> dict:
    x, y = first_batch(cfg, data, seed)
    result = {}
    for name, model in network_pair(cfg, seed, x.device).items():
        result[name] = {str(k): probes.contribution_agreement(
            probes.per_example_contributions(model, x, y, k)) for k in cfg.layers}
    return result


def measure_relative_loss(cfg: RelativeLossConfig, data: Cifar10, seed: int) -> dict:
    """Train each network of the pair at its normal rate for max(probe_batches) steps (or, with
    state "init", keep it at initialisation); before the step on each probed mini-batch, measure
    the relative loss along that batch's gradient (or the optimiser's step: `cfg.direction`), the
    networks in `cfg.layout`."""
    loader = TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfg.batch_size, seed)
    sizes = probes.step_sizes(cfg.sizes, cfg.size_low, cfg.size_high)
    result = {"sizes": sizes.tolist()}
    layout = FIG3_LAYOUTS[cfg.layout]
    for name, model in network_pair(cfg, seed, data.train_x.device).items():
        model = model.to(memory_format=layout)
        lr = cfg.lr_bn if name == "bn" else cfg.lr_no_bn
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)

        def update(params, grads, optimizer=optimizer):
            buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
            return probes.sgd_direction(params, grads, buffers, cfg.momentum, cfg.weight_decay)

        direction = update if cfg.direction == "update" else None
        curves = {}
        for step, (x, y) in zip(range(1, max(cfg.probe_batches) + 1), loader.epoch(0)):
            x = x.contiguous(memory_format=layout)
            if step in cfg.probe_batches:
                ratios = probes.relative_loss_along_gradient(model, x, y, sizes, direction)
                best = int(torch.nan_to_num(ratios, nan=float("inf")).argmin())
                curves[str(step)] = {
                    "relative_loss": ratios.tolist(),
                    "first_above_1e3": probes.first_exceeding(sizes, ratios, 1e3),
                    "best_relative_loss": ratios[best].item(), "best_size": sizes[best].item()}
            if cfg.state == "init":
                continue
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        result[name] = {"lr": lr, "batches": curves}
    return result


def measure_diverging_update(cfg: DivergingUpdateConfig, data: Cifar10, seed: int) -> dict:
    x, y = first_batch(cfg, data, seed)
    model = network_pair(cfg, seed, x.device)["no_bn"]
    fractions = torch.linspace(0, 1, cfg.fractions)
    moments = probes.moments_along_update(model, x, y, cfg.lr, list(cfg.layers), fractions)
    return {"fractions": fractions.tolist(),
            "layers": {str(k): {key: v.cpu().tolist() for key, v in m.items()} for k, m in moments.items()}}


@dataclass(frozen=True)
class SingularValueConfig:
    """Fig 7: singular values of products of Gaussian matrices (no network, no data)."""
    n: int = 1000
    depths: tuple[int, ...] = (1, 3, 5)
    samples: int = 4
    bins: int = 100

    def __post_init__(self):
        check_fields(self)
        check_positive_fields(self)


def measure_singular_values(cfg: SingularValueConfig, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for m in cfg.depths:
        values = torch.cat([probes.gaussian_product_singular_values(cfg.n, m, generator)
                            for _ in range(cfg.samples)])
        counts = torch.histc(values, cfg.bins, 0, values.max().item())
        result[str(m)] = {"max": values.max().item(), "limit": probes.largest_singular_value_limit(m),
                          "median": values.median().item(),
                          "fraction_below_0.1": (values < 0.1).double().mean().item(),
                          "edges": torch.linspace(0, values.max().item(), cfg.bins + 1).tolist(),
                          "counts": counts.long().tolist()}
    return result


# name -> (config class, measure function)
EXPERIMENTS = {
    "fig2_gradients": (GradientConfig, measure_gradients),
    "fig3_relative_loss": (RelativeLossConfig, measure_relative_loss),
    "fig4_diverging_update": (DivergingUpdateConfig, measure_diverging_update),
    "fig5_depth_profile": (DepthConfig, measure_depth_profile),
    "fig6_logit_gradients": (LogitGradientConfig, measure_logit_gradients),
    "fig7_singular_values": (SingularValueConfig, measure_singular_values),
    "table1_contributions": (ContributionConfig, measure_contributions),
    "signal_propagation": (SignalConfig, measure_signal_propagation),
    COLLAPSE: (CollapseConfig, measure_collapse),  # beyond the paper: the first updates, step by step
}

# Each experiment's config under each preset (PROBE_PRESETS), whole: "paper" is the paper's setup
# (the classes' defaults); "smoke" runs in seconds on ResNet-20 and 200 training images, to check
# that everything runs. Layer lists are ResNet-110's, scaled to the network (`experiment_config`).
SMOKE_NETWORK = dict(arch="resnet20", batch_size=16, train_subset=200)
PRESETS = {
    "paper": {name: cls() for name, (cls, _) in EXPERIMENTS.items()},
    "smoke": {
        "fig2_gradients": GradientConfig(**SMOKE_NETWORK),
        "fig3_relative_loss": RelativeLossConfig(**SMOKE_NETWORK, sizes=12),
        "fig4_diverging_update": DivergingUpdateConfig(**SMOKE_NETWORK, fractions=5),
        "fig5_depth_profile": DepthConfig(**SMOKE_NETWORK),
        "fig6_logit_gradients": LogitGradientConfig(**SMOKE_NETWORK, epoch_batches=3),
        "fig7_singular_values": SingularValueConfig(n=64, samples=1),
        "table1_contributions": ContributionConfig(**SMOKE_NETWORK),
        "signal_propagation": SignalConfig(**SMOKE_NETWORK),
        COLLAPSE: CollapseConfig(**SMOKE_NETWORK, steps=6, health_every=3, health_images=32),
    },
}


def experiment_config(experiment: str, preset: str = "paper", **overrides):
    """The config of `experiment` under `preset`, with fields replaced by `overrides`.

    An override of None for a field that cannot be None (arch, init, ...) means "the preset's
    value": notebooks pass their `arch=None` parameter straight through. Layer lists given for
    ResNet-110 (Fig 4, Table 1) are scaled to the depth of another network, unless `layers` is
    overridden.
    """
    check_choice("experiment", experiment, EXPERIMENTS)
    check_choice("preset", preset, PROBE_PRESETS)
    cls = EXPERIMENTS[experiment][0]
    names = {f.name for f in fields(cls)}
    for name in overrides:
        check_choice(f"{cls.__name__} field", name, sorted(names))
    nullable = {f.name for f in fields(cls) if type(None) in get_args(f.type)}
    overrides = {k: v for k, v in overrides.items() if v is not None or k in nullable}
    cfg = replace(PRESETS[preset][experiment], **overrides)
    if "layers" in names and "layers" not in overrides and cfg.arch != "resnet110":
        depth = len(weight_layers(build_model(bn=False, **network_fields(cfg))))
        cfg = replace(cfg, layers=tuple(min(depth - 1, max(2, round(k * depth / 110))) for k in cfg.layers))
    return cfg


def run_experiment(experiment: str, cfg, seed: int = 0, data_dir=None, device=None,
                   recompute: bool = False, store: Store | None = None) -> dict:
    """The stored run of `experiment` for (cfg, seed), computed (and stored) if missing."""
    measure = EXPERIMENTS[experiment][1]
    if isinstance(cfg, SingularValueConfig):  # needs no data: compute directly
        return (store or Store()).get_or_compute(experiment, cfg, seed, lambda: measure(cfg, seed), "cpu",
                                    recompute=recompute)
    return get_or_measure(experiment, cfg, seed, lambda data: measure(cfg, data, seed), data_dir,
                          device, recompute, store)


def main(argv: list[str] | None = None) -> None:
    """Compute stored runs from the command line, e.g.
    `python -m shared.experiments fig2_gradients --seeds 0 1 2 --set arch=resnet101 init=xavier_normal`."""
    from .cli import literal_value, seed_arg

    parser = argparse.ArgumentParser(prog="python -m shared.experiments", description=main.__doc__)
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=seed_arg, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--recompute", action="store_true")
    args = parser.parse_args(argv)

    malformed = [item for item in args.set if "=" not in item]
    if malformed:
        parser.error(f"--set takes FIELD=VALUE pairs, got {' '.join(malformed)!r} "
                     f"(for example --set arch=resnet101 init=xavier_normal)")
    overrides = {k: literal_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    try:
        cfg = experiment_config(args.experiment, args.preset, **overrides)
    except ValueError as error:  # a bad field or value: one line naming it, not a traceback
        parser.error(str(error))
    for seed in args.seeds:
        start = time.perf_counter()
        run_experiment(args.experiment, cfg, seed, args.data_dir, recompute=args.recompute)
        print(f"{args.experiment} seed {seed} {overrides}: {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
