"""Figure 2 from stored probe runs: the gradients of a layer's weights at initialisation.

Bjorck et al. (2018), Fig 2: histograms of the gradients of ResNet-110's middle layer (layer 55)
at initialisation, for one mini-batch of real training images. With BN they look Gaussian and
small (within about ±0.04); without BN they are heavy-tailed and about two orders of magnitude
larger (the axis reaches ±4). The notebook `02_fig2_gradients` calls these; every run is a stored
result of the "fig2_gradients" experiment: per network ("bn", "no_bn") the gradient's histogram
("counts", "edges"), its "std", "max_abs", "excess_kurtosis" and "layer", and the ratio of the
standard deviations without and with BN ("scale_ratio").
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns

from .. import probes
from ..atinit import first_batch, middle_layer, network_pair
from ..claims import Claim, holds, judged, unjudged_reason
from ..config import DEFAULT_INIT, ProbeConfig
from ..data import Cifar10
from ..models import INITS
from ..paper import FIG2_MAX_ABS
from .protocol import SMOKE_NETWORK, Measurement, Source, probe_runs

EXPERIMENT = "fig2_gradients"

NETWORKS = {"bn": "with BN", "no_bn": "w/o BN"}
STATS = ("std", "max_abs", "excess_kurtosis")
COMPARED_ARCHS = ("resnet110", "resnet101")  # the initialisation comparison's architectures
PAPER_RATIO = 100  # the paper's no-BN / BN gradient scale, "about two orders of magnitude"


# ---- the measurement: its config, measure function and presets ----

@dataclass(frozen=True)
class GradientConfig(ProbeConfig):
    """Fig 2: the gradient of one layer's weights at initialisation."""
    layer: int | None = None  # None: the middle layer (55 of ResNet-110, 51 of ResNet-101)
    bins: int = 201


def measure_gradients(cfg: GradientConfig, data: Cifar10, seed: int) -> dict:
    x, y = first_batch(cfg, data, seed)
    result = {}
    for name, model in network_pair(cfg, seed, x.device).items():
        k = cfg.layer or middle_layer(model)
        g = probes.layer_weight_gradient(model, x, y, k)
        result[name] = {"layer": k, **probes.summary_stats(g), **probes.histogram(g, cfg.bins)}
    result["scale_ratio"] = result["no_bn"]["std"] / result["bn"]["std"]
    return result


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": GradientConfig(), "smoke": GradientConfig(**SMOKE_NETWORK)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_gradients)


def gradient_table(runs: list[dict]) -> pd.DataFrame:
    """Per seed: each network's gradient std, largest magnitude and excess kurtosis, and the ratio
    of the no-BN to the BN standard deviation."""
    rows = [{"seed": r.provenance["seed"],
             **{f"{name} {stat}": r.result[name][stat] for name in NETWORKS for stat in STATS},
             "no_bn/bn std": r.result["scale_ratio"]} for r in runs]
    return pd.DataFrame(rows).set_index("seed")


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The mean and standard deviation (ddof 1) over the seeds of every column."""
    return table.agg(["mean", "std"])


def comparison_configs(preset: str, arch: str) -> dict:
    """The configurations of the initialisation comparison: {(arch, init): config} for `arch`
    and then the other compared architectures, each under every scheme of `INITS`."""
    return {(a, scheme): MEASUREMENT.config(preset, arch=a, init=scheme)
            for a in dict.fromkeys([arch, *COMPARED_ARCHS]) for scheme in INITS}


def init_comparison(found: dict[tuple[str, str], list[dict]]) -> pd.DataFrame:
    """Per (arch, init) with runs: seeds and the means over them of the gradients' statistics."""
    rows = []
    for (arch, scheme), runs in found.items():
        if runs:
            means = gradient_table(runs).mean()
            rows.append({"arch": arch, "init": scheme, "seeds": len(runs), "bn std": means["bn std"],
                         "bn max": means["bn max_abs"], "no_bn std": means["no_bn std"],
                         "no_bn max": means["no_bn max_abs"],
                         "no_bn kurtosis": means["no_bn excess_kurtosis"],
                         "no_bn/bn std": means["no_bn/bn std"]})
    return pd.DataFrame(rows).set_index(["arch", "init"])


def closest_init(compare: pd.DataFrame, arch: str, target: float = PAPER_RATIO) -> str:
    """The scheme of `arch` whose no-BN/BN std ratio is closest to `target` in decades."""
    return compare.loc[arch, "no_bn/bn std"].apply(lambda r: abs(np.log10(r / target))).idxmin()


def draw_histogram(ax, gradients: dict) -> None:
    """A stored histogram ("counts" over "edges") drawn by `seaborn.histplot` on exactly its bins:
    each bin's centre weighted by its count, as one filled step outline (the edges go in as a list:
    seaborn 0.13 compares `bins` with "auto", which an array cannot answer)."""
    edges = np.asarray(gradients["edges"], dtype=float)
    bins = pd.DataFrame({"gradient": (edges[:-1] + edges[1:]) / 2, "counts": gradients["counts"]})
    sns.histplot(bins, x="gradient", weights="counts", bins=edges.tolist(), element="step", fill=True,
                 color="C0", alpha=1, linewidth=0, ax=ax)


def plot_histogram(ax, gradients: dict, title: str) -> None:
    """One network's stored gradient histogram."""
    draw_histogram(ax, gradients)
    ax.set(title=title, xlabel="gradient", ylabel="counts")


def plot_histograms(axes, result: dict) -> None:
    """The two histograms of one run, with BN and without, side by side."""
    for ax, (name, title) in zip(axes, NETWORKS.items()):
        plot_histogram(ax, result[name], title)


def plot_inits(axes, results: dict[str, dict]) -> None:
    """A column per scheme ({init: result}): the histogram with BN above, without below."""
    for col, (scheme, result) in enumerate(results.items()):
        for row, (name, title) in enumerate(NETWORKS.items()):
            ax = axes[row, col]
            draw_histogram(ax, result[name])
            ax.set(xlabel="", ylabel="")
            ax.set_title(f"{scheme}\n{title}", fontsize=9)
            ax.tick_params(labelsize=7)


def judge(mean: pd.Series, preset: str) -> list[Claim]:
    """Fig 2's claims from the means over seeds (`seed_summary(...).loc["mean"]`): BN's gradients
    small and near Gaussian, no BN's heavy-tailed, and their ratio about 100 (partly above 10)."""
    unless = unjudged_reason(preset)
    ratio = mean["no_bn/bn std"]
    return [
        judged("bn_gradients_gaussian",
               "With BN: gradients roughly Gaussian, within about ±0.04", f"max |g| ≈ {FIG2_MAX_ABS['bn']:g}",
               f"max |g| = {mean['bn max_abs']:.3g}, excess kurtosis {mean['bn excess_kurtosis']:.2g}",
               holds(bool(mean["bn max_abs"] < 0.1 and abs(mean["bn excess_kurtosis"]) < 3)), unless),
        judged("no_bn_gradients_heavy_tailed",
               "Without BN: heavy-tailed (sharp peak, long tails)", f"tails to ±{FIG2_MAX_ABS['no_bn']:g} and beyond",
               f"excess kurtosis {mean['no_bn excess_kurtosis']:.3g}, max |g| = {mean['no_bn max_abs']:.3g}",
               holds(bool(mean["no_bn excess_kurtosis"] > 3)), unless),
        judged("no_bn_gradients_100x_larger",
               "Without BN the gradients are about two orders of magnitude larger", "≈ 100x",
               f"{ratio:.3g}x (std ratio)", holds(bool(30 <= ratio <= 300), partly=bool(ratio > 10)), unless),
    ]


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    """Fig 2's stored runs: the network's, and the initialisation comparison's."""
    cfg: GradientConfig
    runs: list[dict]                               # the network's, one per seed
    inits: dict[tuple[str, str], list[dict]]       # (arch, init) -> runs, by `comparison_configs`


def load(source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> Runs:
    """The runs of `arch` (None: the preset's) with convolutions initialised by `init`, and of
    the comparison (computed only for `arch`'s schemes)."""
    cfg = MEASUREMENT.config(source.preset, arch=arch, init=init)
    runs = probe_runs(MEASUREMENT, cfg, source)
    inits = {(a, scheme): probe_runs(MEASUREMENT, c, source if a == cfg.arch else source.read_only)
             for (a, scheme), c in comparison_configs(source.preset, cfg.arch).items()}
    return Runs(cfg, runs, inits)


@dataclass(frozen=True)
class Tables:
    gradients: pd.DataFrame  # `gradient_table`: per seed
    summary: pd.DataFrame    # `seed_summary`: its mean and std over the seeds
    inits: pd.DataFrame      # `init_comparison`: per (arch, init)


def tables(found: Runs) -> Tables:
    gradients = gradient_table(found.runs)
    return Tables(gradients, seed_summary(gradients), init_comparison(found.inits))


def claims(t: Tables, preset: str) -> list[Claim]:
    """Fig 2's claims, judged on the means over the seeds."""
    return judge(t.summary.loc["mean"], preset)
