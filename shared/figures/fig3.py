"""Figure 3 from stored probe runs: the relative loss along a mini-batch's gradient.

Bjorck et al. (2018), Fig 3: early in training (mini-batches 1, 4 and 7) the relative loss
L(θ - s·g) / L(θ) on the same mini-batch against the step size s, on log-log axes. With BN it
stays within about 10^-0.2..10^0.5 up to s = 0.1, with its dip near s = 0.02..0.1; without BN the
dip is near s = 2e-4 and the loss passes 10^3 x its value at s ≈ 2e-3..3e-3 and 10^6 x at
s ≈ 3e-3..6e-3. The notebook `03_fig3_relative_loss` calls these; every run is a stored result of
the "fig3_relative_loss" experiment: the step "sizes" and, per network ("bn", "no_bn"), its
training "lr" and per probed mini-batch ("1", "4", ...) the "relative_loss" at every size
(None where not finite), the "best_relative_loss" and the "best_size".
"""

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import probes
from ..atinit import network_pair
from ..claims import Claim, holds, judged, slug, unjudged_reason
from ..config import DEFAULT_INIT, ProbeConfig, added, check_choice
from ..data import Cifar10, TrainLoader
from .protocol import SMOKE_NETWORK, Measurement, Source, probe_runs
from .relative_loss import (NETWORKS, PAPER_Y_MIN, Y_MAX, batch_means, batches, curve, median_table,  # noqa: F401
                            plot_overlay, plot_relative_loss, probe_table, y_floor)

EXPERIMENT = "fig3_relative_loss"



# ---- the measurement: its config, measure function and presets ----

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


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": RelativeLossConfig(), "smoke": RelativeLossConfig(**SMOKE_NETWORK, sizes=12)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_relative_loss)


def within(values: pd.Series, low: float, high: float) -> str:
    """yes if every value is inside [low, high] within a factor 2 (reading a log axis); partly if
    all are within a factor 10, or some within the factor 2; else no."""
    inside = (values >= low / 2) & (values <= high * 2)
    near = (values >= low / 10) & (values <= high * 10)
    return holds(bool(inside.all()), partly=bool(near.all() or inside.any()))


def by_batch(values: pd.Series) -> str:
    """"mini-batch 1: a, 4: b..c, ...": the value (or its range over seeds) for each mini-batch."""
    parts = []
    for batch, v in values.groupby(level="mini-batch"):
        lo, hi = v.min(), v.max()
        parts.append(f"{batch}: {lo:.2g}" + ("" if lo == hi else f"..{hi:.2g}"))
    return "mini-batch " + ", ".join(parts)


def judge(table: pd.DataFrame, largest_size: float, first_batch: int, preset: str) -> list[Claim]:
    """Fig 3's claims from `probe_table`: `largest_size` is the sweep's largest step (where BN
    never passes 10^3, its first step past it is counted there), `first_batch` the mini-batch
    whose dip without BN is compared with the paper's."""
    unless = unjudged_reason(preset)
    bn, no_bn = table.loc["bn"], table.loc["no_bn"]
    bn_first = bn["first s > 1e3"]
    bn_log = np.log10(pd.concat([bn["min ratio, s ≤ 0.1"], bn["max ratio, s ≤ 0.1"]]))
    # BN's first explosive step, or the largest step of the sweep where it never explodes
    factor = bn_first.clip(upper=largest_size).min() / no_bn["first s > 1e3"].max()
    first = no_bn.xs(first_batch, level="mini-batch", drop_level=False)
    never = bool(np.isinf(bn_first).all())
    return [
        judged("bn_no_explosion_up_to_0_1",
               "With BN the loss does not explode (> 10^3 x) for steps up to s = 0.1", "never up to s = 0.1",
               "never up to s = 10^0.5" if never else f"first at s = {by_batch(bn_first)}",
               holds(bool((bn_first > 0.1).all())), unless),
        judged("bn_relative_loss_range",
               "With BN the relative loss stays within about 10^-0.2..10^0.5 up to s = 0.1", "10^-0.2..10^0.5",
               f"10^{bn_log.min():.2f}..10^{bn_log.max():.2f}",
               holds(bool(bn_log.min() >= -0.3 and bn_log.max() <= 0.6), partly=bool(bn_log.max() <= 1)),
               unless),
        judged("bn_best_step", "With BN the best step (the dip of the curve) is near s = 0.02..0.1", "s ≈ 0.02..0.1",
               f"{by_batch(bn['best s'])}", within(bn["best s"], 0.02, 0.1), unless),
        judged("no_bn_passes_1e3",
               "Without BN the loss passes 10^3 x its value at s ≈ 2e-3..3e-3", "s ≈ 2e-3..3e-3",
               f"{by_batch(no_bn['first s > 1e3'])}", within(no_bn["first s > 1e3"], 2e-3, 3e-3), unless),
        judged("no_bn_passes_1e6",
               "Without BN the loss passes 10^6 x its value at s ≈ 3e-3..6e-3", "s ≈ 3e-3..6e-3",
               f"{by_batch(no_bn['first s > 1e6'])}", within(no_bn["first s > 1e6"], 3e-3, 6e-3), unless),
        judged("no_bn_first_batch_dip",
               f"Without BN, mini-batch {first_batch}'s curve dips near s = 2e-4", "best s ≈ 2e-4, ratio ≈ 10^-1.3",
               f"best s = {first['best s'].min():.2g}..{first['best s'].max():.2g}, ratio "
               f"{first['best relative loss'].min():.2g}..{first['best relative loss'].max():.2g}",
               within(first["best s"], 2e-4, 2e-4), unless),
        judged("bn_allows_larger_steps",
               "BN allows far larger steps: first step past 10^3 x, BN / no BN", "≥ 0.1 / 3e-3 ≈ 30x",
               f"≥ {factor:.3g}x" + (" (BN never passes 10^3 x in the sweep)" if never else ""),
               holds(bool(factor >= 10)), unless),
    ]


# The ablation behind the mini-batches 4 and 7 mismatch (the paper leaves both choices open): the
# step's definition and the network's state, each changed alone. Probed at mini-batches 4 and 7
# only (mini-batch 1 has no preceding step: there the variants are the default's curve, up to
# weight decay) with 40 step sizes, 0.15 decade apart, a quarter of the default run's cost.
ABLATION_BATCHES = (4, 7)
ABLATION_SIZES = 40
VARIANTS = {
    "gradient step, after the preceding steps (ours)": {},
    "gradient step, at initialisation": {"state": "init"},
    "optimiser's step, after the preceding steps": {"direction": "update"},
}


def reduced_config(cfg, batches: tuple[int, ...], sizes: int, **change):
    """`cfg` probing only `batches` with `sizes` step sizes (never more than `cfg`'s), and `change`:
    the cheaper probes of the ablation, the depth ladder and the normalisation-free networks."""
    return replace(cfg, probe_batches=batches, sizes=min(cfg.sizes, sizes), **change)


def ablation_configs(cfg) -> dict:
    """The config of each VARIANTS entry: `cfg` itself for ours, else `cfg` with the ablation's
    fields and the variant's change."""
    return {name: reduced_config(cfg, ABLATION_BATCHES, ABLATION_SIZES, **change) if change else cfg
            for name, change in VARIANTS.items()}


def ablation_table(runs: dict[str, list[dict]]) -> pd.DataFrame:
    """Per variant, network and mini-batch (4 and 7): the median over seeds of the first step
    sizes past 10^3 and 10^6 and of the best step, and the number of seeds."""
    return median_table(runs, [str(b) for b in ABLATION_BATCHES],
                        ["first s > 1e3", "first s > 1e6", "best s"], "variant")


def variant_probes(runs: dict[str, list[dict]]) -> pd.DataFrame:
    """`probe_table` on the ablation's mini-batches (4, 7) for each variant with runs, indexed by
    variant, network, mini-batch and seed."""
    batches = [str(b) for b in ABLATION_BATCHES]
    return pd.concat({name: probe_table(found, batches) for name, found in runs.items() if found},
                     names=["variant"])


def ablation_claims(probes: pd.DataFrame, preset: str) -> list[Claim]:
    """For each ablation variant in `variant_probes` but ours: does the network without BN pass
    10^3 x at the paper's s ≈ 2e-3..3e-3 on mini-batches 4 and 7 (every seed, factor 2 for reading
    the axis)?"""
    unless = unjudged_reason(preset)
    claims = []
    for name in probes.index.unique("variant"):
        if not VARIANTS[name]:
            continue
        first = probes.loc[name].loc["no_bn", "first s > 1e3"]
        n_seeds = first.index.unique("seed").size
        key = "_".join(slug(v) for v in VARIANTS[name].values())  # "init", "update": what the variant changes
        claims.append(judged(f"ablation_{key}_no_bn_passes_1e3",
                             f"(ablation: {name}) Without BN, mini-batches 4 and 7 pass 10^3 x at "
                             f"s ≈ 2e-3..3e-3", "s ≈ 2e-3..3e-3", f"{by_batch(first)} ({n_seeds} seed(s))",
                             within(first, 2e-3, 3e-3), unless))
    return claims


def plot_ablation(axes, runs: dict[str, list[dict]]) -> None:
    """One panel per ablation mini-batch (4, 7), the network without BN: every seed's curve under
    each variant with runs (a colour per variant), the threshold 10^3 (dashed) and the paper's
    step sizes where it passes it (shaded)."""
    for ax, batch in zip(axes, [str(b) for b in ABLATION_BATCHES]):
        for i, (name, variant_runs) in enumerate(runs.items()):
            for j, r in enumerate(variant_runs):
                ax.plot(r.result["sizes"], curve(r.result, "no_bn", batch), color=f"C{i}", lw=1,
                        alpha=0.7, label=name if j == 0 else None)
        ax.axhline(1e3, color="C3", ls="--", lw=0.8)
        ax.axvspan(2e-3, 3e-3, color="0.85", zorder=0)
        ax.set(xscale="log", yscale="log", ylim=(PAPER_Y_MIN, Y_MAX), xlabel="step size",
               title=f"w/o BN, mini-batch {batch}")
    axes[0].set_ylabel("relative loss")


def networks_table(found: dict[str, list[dict]], batches: list[str]) -> pd.DataFrame:
    """Per network (`found`'s labels, those with runs), BN or not, and mini-batch: the median over
    seeds of the first step sizes past 10^3 and of the best step, and the number of seeds."""
    return median_table(found, batches, ["first s > 1e3", "best s"], "net")


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

COMPARED = (("resnet101", "xavier_uniform"), ("resnet101", "kaiming_normal_fan_out"))  # beside ours


@dataclass(frozen=True)
class Runs:
    """Fig 3's stored runs: the network's, the ablation's and the compared networks'."""
    cfg: RelativeLossConfig
    runs: list[dict]                    # the network's, one per seed
    variants: dict[str, list[dict]]     # VARIANTS name -> runs (`ablation_configs`)
    networks: dict[str, list[dict]]     # "arch, conv init" -> runs: ours ("(ours)") and COMPARED


def load(source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> Runs:
    """The runs of `arch` (None: the preset's) with convolutions initialised by `init`, of its
    ablation variants, and of the COMPARED networks (read only)."""
    cfg = MEASUREMENT.config(source.preset, arch=arch, init=init)
    runs = probe_runs(MEASUREMENT, cfg, source)
    variants = {name: probe_runs(MEASUREMENT, c, source) for name, c in ablation_configs(cfg).items()}
    networks = {f"{cfg.arch}, conv {cfg.init} (ours)": runs,
                **{f"{a}, conv {scheme}": probe_runs(MEASUREMENT, MEASUREMENT.config(
                    source.preset, arch=a, init=scheme), source.read_only) for a, scheme in COMPARED}}
    return Runs(cfg, runs, variants, networks)


@dataclass(frozen=True)
class Tables:
    batches: list[str]        # the probed mini-batches (`batches`)
    largest_size: float       # the sweep's largest step size
    probes: pd.DataFrame      # `probe_table`: per network, mini-batch and seed
    means: pd.DataFrame       # `batch_means`: over the seeds
    ablation: pd.DataFrame    # `ablation_table`
    ablation_probes: pd.DataFrame  # `variant_probes`: per variant, network, mini-batch and seed
    networks: pd.DataFrame    # `networks_table`


def tables(found: Runs) -> Tables:
    cfg, names = found.cfg, batches(found.cfg)
    probes = probe_table(found.runs, names)
    return Tables(names, 10 ** cfg.size_high, probes, batch_means(probes), ablation_table(found.variants),
                  variant_probes(found.variants), networks_table(found.networks, names))


def claims(t: Tables, preset: str) -> list[Claim]:
    """Fig 3's claims (`judge`), then the ablation's (`ablation_claims`)."""
    return judge(t.probes, t.largest_size, int(t.batches[0]), preset) + ablation_claims(t.ablation_probes, preset)
