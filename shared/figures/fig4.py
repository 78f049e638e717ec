"""Figure 4 from stored runs: channel moments while a diverging update is applied (no BN).

Bjorck et al. (2018), Fig 4: for the network without BN, a single SGD update that makes it diverge
is applied in fractions from 0 % to 100 %, and heatmaps show the mean (top) and variance (bottom)
of every channel of layers 8, 44 and 80 of ResNet-110 along the way. Layer 8 barely moves; deeper
layers blow up (layer 80's channel means reach about 1e8, its variances about 1e16), late in the
step. Each run of "fig4_diverging_update" (`measure_diverging_update`) stores, per profiled layer, the
per-channel "means" and "variances" at every fraction of the update (`[fractions, channels]`,
None where the float32 forward pass overflowed) and the "fractions" themselves. The notebook
`04_fig4_diverging_update` calls these: tables per seed and layer, the rate at which our layers
reach the paper's scale, the claims and the plots.
"""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import MaxNLocator

from .. import probes
from ..atinit import first_batch, network_pair
from ..claims import NO, NOT_JUDGED, YES, Claim, at_least, holds, judged, unjudged_reason
from ..config import DEFAULT_INIT, ProbeConfig
from ..data import Cifar10
from ..paper import FIG4_AT_100
from .protocol import SMOKE_NETWORK, Measurement, NetworkRuns, Source, network_runs

EXPERIMENT = "fig4_diverging_update"

# the paper's colour bars, in the order of its layers 8, 44, 80 (the same positions are used for
# other depths): how the claims quote them; the largest values are FIG4_AT_100's
PAPER_TEXT = ("means ≈ -0.5..1.2, variances ≤ 1", "means ≈ -3500..2500, variances ≤ 5e6",
              "means ≈ -3e8..1e8, variances ≤ 5.5e16")
CMAP = plt.get_cmap("viridis").with_extremes(bad="0.75")  # grey: non-finite (overflow)


# ---- the measurement: its config, measure function and presets ----

@dataclass(frozen=True)
class DivergingUpdateConfig(ProbeConfig):
    """Fig 4: channel moments of the no-BN network while a diverging update is applied."""
    lr: float = 3e-3  # a rate at which the no-BN network diverges (Fig 1's middle BN rate)
    layers: tuple[int, ...] = (8, 44, 80)  # of ResNet-110; scaled to other depths
    fractions: int = 21                           # 0 %, 5 %, ..., 100 % of the update


def measure_diverging_update(cfg: DivergingUpdateConfig, data: Cifar10, seed: int) -> dict:
    x, y = first_batch(cfg, data, seed)
    model = network_pair(cfg, seed, x.device)["no_bn"]
    fractions = torch.linspace(0, 1, cfg.fractions)
    moments = probes.moments_along_update(model, x, y, cfg.lr, list(cfg.layers), fractions)
    return {"fractions": fractions.tolist(),
            "layers": {str(k): {key: v.cpu().tolist() for key, v in m.items()} for k, m in moments.items()}}


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": DivergingUpdateConfig(), "smoke": DivergingUpdateConfig(**SMOKE_NETWORK, fractions=5)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_diverging_update)


def paper_scales(layers) -> dict:
    """The paper's colour bars by our layer (zipped by position with its layers 8, 44, 80):
    {layer: (text, largest |channel mean|, largest channel variance)}."""
    return dict(zip(layers, [(text, values["max_abs_mean"], values["max_variance"])
                             for text, values in zip(PAPER_TEXT, FIG4_AT_100.values())]))


def moments(result: dict, k, key: str) -> np.ndarray:
    """[fractions, channels] of `key` ("means" or "variances") of layer `k`; non-finite values
    (stored as None: the float32 forward pass overflowed) become NaN."""
    return np.array(result["layers"][str(k)][key], dtype=float)


def high(values: np.ndarray, axis=None):
    """The largest value (along `axis`), +inf where any value is non-finite (an overflow)."""
    largest = np.where(np.isnan(values).any(axis), np.inf, np.fmax.reduce(values, axis))
    return float(largest) if axis is None else largest


def low(values: np.ndarray) -> float:
    """The smallest value, -inf if any value is non-finite (an overflow)."""
    return -np.inf if np.isnan(values).any() else values.min()


def layer_row(result: dict, k) -> dict:
    """Layer `k` of one run: the range of the channel means and the largest channel variance at 0 %
    and 100 % of the update, the growth factors of the largest |channel mean| and variance, and the
    first % of the step at which the largest variance reaches 1 % of its final value (where the
    blow-up becomes visible on the heatmap's linear colour scale)."""
    means, variances = moments(result, k, "means"), moments(result, k, "variances")
    fractions = np.array(result["fractions"])
    largest = high(variances, axis=1)
    visible = largest >= 0.01 * largest[-1]  # on the final linear colour scale
    return {"means min 0%": low(means[0]), "means max 0%": high(means[0]),
            "var max 0%": high(variances[0]),
            "means min 100%": low(means[-1]), "means max 100%": high(means[-1]),
            "var max 100%": largest[-1],
            "|mean| growth": high(np.abs(means[-1])) / high(np.abs(means[0])),
            "var growth": largest[-1] / largest[0],
            "visible from %": 100 * fractions[visible.argmax()]}


def layer_table(runs: list[dict], layers) -> pd.DataFrame:
    """`layer_row` for every run and layer, indexed by (seed, layer)."""
    return pd.DataFrame([{"seed": r.provenance["seed"], "layer": k, **layer_row(r.result, k)}
                         for r in runs for k in layers]).set_index(["seed", "layer"])


def layer_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The median over seeds of `layer_table`, by layer (the seeds differ by many orders of
    magnitude, so the median rather than the mean)."""
    return table.groupby(level="layer").median()


def layer_spread(table: pd.DataFrame) -> pd.DataFrame:
    """The min, median and max over seeds of the final scale and the variance growth, by layer."""
    return table.groupby(level="layer")[["means min 100%", "means max 100%", "var max 100%",
                                         "var growth"]].agg(["min", "median", "max"])


def matching_fraction(result: dict, k, paper_variance: float) -> float:
    """The smallest fraction of the update (on the run's grid) at which layer `k`'s largest channel
    variance reaches `paper_variance`; NaN if it does not by 100 %."""
    reached = high(moments(result, k, "variances"), axis=1) >= paper_variance
    return np.array(result["fractions"])[reached.argmax()] if reached.any() else np.nan


def match_row(result: dict, layers, lr: float, paper: dict) -> dict:
    """For one run: the fraction at which each layer but the first reaches the paper's largest
    variance, the equivalent rate (that fraction of the deepest layer times `lr`), and every other
    layer's largest variance at that fraction."""
    row = {f"layer {k} fraction": matching_fraction(result, k, paper[k][2]) for k in layers[1:]}
    last = row[f"layer {layers[-1]} fraction"]
    row["rate"] = last * lr
    for k in layers[:-1]:
        at = np.searchsorted(result["fractions"], last)
        row[f"layer {k} var there"] = np.nan if np.isnan(last) else high(moments(result, k, "variances")[at])
    return row


def match_table(runs: list[dict], layers, lr: float, paper: dict) -> pd.DataFrame:
    """`match_row` per seed, and their median as the last row ("median")."""
    match = pd.DataFrame([{"seed": r.provenance["seed"], **match_row(r.result, layers, lr, paper)}
                          for r in runs]).set_index("seed")
    match.loc["median"] = match.median()
    return match


def rows_until(fractions, fraction: float) -> int:
    """How many fractions of the grid there are up to and including `fraction`."""
    return int(np.searchsorted(fractions, fraction)) + 1


def nice_ticks(low: float, high: float) -> np.ndarray:
    """About five round values from `low` to `high` (a heatmap's channels or % of the step)."""
    ticks = MaxNLocator(nbins=5, integer=True, steps=[1, 2, 5, 10]).tick_values(low, high)
    return ticks[(ticks >= low) & (ticks <= high)]


def heatmaps(result: dict, layers, rows: int, title: str) -> plt.Figure:
    """The paper's layout: channel means (top) and variances (bottom) of each layer by
    `seaborn.heatmap`, one colour bar each, the first `rows` fractions of the update from 0 % (top)
    to 100 % (bottom); grey where the forward pass overflowed."""
    percent = 100 * np.array(result["fractions"][:rows]) / result["fractions"][rows - 1]
    fig, axes = plt.subplots(2, len(layers), figsize=(4.2 * len(layers), 7.2))
    for col, k in enumerate(layers):
        for row, key in enumerate(("means", "variances")):
            ax = axes[row, col]
            values = moments(result, k, key)[:rows]
            sns.heatmap(values, ax=ax, cmap=CMAP, xticklabels=False, yticklabels=False,
                        rasterized=True)  # the SVG embeds the cells as an image, as imshow did
            channels, steps = nice_ticks(0, values.shape[1] - 1), nice_ticks(0, 100)
            ax.set_xticks(channels + 0.5, channels.astype(int))  # seaborn's cell i spans [i, i + 1]
            ax.set_yticks(np.interp(steps, percent, np.arange(rows)) + 0.5, steps.astype(int), rotation=0)
            ax.grid(False)
            if row == 0:
                ax.set_title(f"Layer {k}", fontsize=13)
            else:
                ax.set_xlabel("channel")
            if col == 0:
                ax.set_ylabel("% of step")
            if col == len(layers) - 1:
                ax.text(1.42, 0.5, key, transform=ax.transAxes, rotation=-90, va="center", fontsize=13)
    overflow = any(np.isnan(moments(result, k, "means")[:rows]).any() for k in layers)
    fig.suptitle(title + ("\ngrey: non-finite (the float32 forward pass overflowed)" if overflow else ""))
    fig.tight_layout()
    return fig


def plot_growth(axes, runs: list[dict], layers, lr: float, seed: int, paper: dict) -> None:
    """The largest |channel mean| (left) and channel variance (right) of each layer against the %
    of the update, log scale, every run (thick: `seed`), the paper's values dashed, and the
    equivalent rate t·lr on the top axis; a line ends where the forward pass overflows."""
    colors = dict(zip(layers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for r in runs:
        result, s = r.result, r.provenance["seed"]
        for k in layers:
            for ax, key in zip(axes, ("means", "variances")):
                curve = high(np.abs(moments(result, k, key)), axis=1)
                curve[np.isinf(curve)] = np.nan  # the line ends where the forward pass overflows
                ax.plot(100 * np.array(result["fractions"]), curve, color=colors[k],
                        lw=1.8 if s == seed else 0.8, alpha=1 if s == seed else 0.5,
                        label=f"layer {k}" if s == seed else None)
    for k in layers:
        axes[0].axhline(paper[k][1], color=colors[k], ls="--", lw=0.8)
        axes[1].axhline(paper[k][2], color=colors[k], ls="--", lw=0.8)
    for ax, title in zip(axes, ("largest |channel mean|", "largest channel variance")):
        ax.set(yscale="log", xlabel="% of step", title=title)
        top = ax.secondary_xaxis("top", functions=(lambda p: p * lr / 100, lambda r: r * 100 / lr))
        top.set_xlabel("equivalent rate t·lr", fontsize=8)
        top.tick_params(labelsize=7)
        ax.legend()


def same_scale(ours: float, paper: float) -> str:
    """yes if ours is within a factor of 10 of the paper's, partly within a factor of 1000, else no
    (also where ours is infinite: the forward pass overflowed, far past the paper's scale); not
    judged where ours is NaN: there is no number to compare."""
    if np.isnan(ours):
        return NOT_JUDGED
    gap = abs(np.log10(ours / paper))
    return holds(bool(gap <= 1), partly=bool(gap <= 3))


def all_of(verdicts: list[str]) -> str:
    """no if any verdict is no; else not judged if any is; yes if every one is yes; else partly."""
    if NO in verdicts:
        return NO
    if NOT_JUDGED in verdicts:
        return NOT_JUDGED
    return holds(all(v == YES for v in verdicts), partly=True)


NAN_NOTE = "a measured moment is NaN (missing from the stored runs): nothing to compare"


def judge(summary: pd.DataFrame, spread: pd.DataFrame, match: pd.DataFrame, layers,
          preset: str) -> list[Claim]:
    """Fig 4's claims from `layer_summary`, `layer_spread` and `match_table`: each layer's scale at
    100 % of the step (means and variances on the paper's scale, `same_scale`), growth with depth,
    one rate matching every layer, and the blow-up happening late; not judged for the smoke preset."""
    unless = unjudged_reason(preset)
    paper = paper_scales(layers)
    n_seeds = len(match) - 1  # its rows: the seeds, then their median
    out = []
    for k, (text, paper_mean, paper_var) in paper.items():
        m = summary.loc[k]
        largest_mean = max(abs(m["means min 100%"]), abs(m["means max 100%"]))
        verdict = all_of([same_scale(largest_mean, paper_mean), same_scale(m["var max 100%"], paper_var)])
        out.append(judged(f"layer_{k}_scale", f"Layer {k} at 100 % of the step: scale of the channel moments", text,
                          f"median over {n_seeds} seed(s): means {m['means min 100%']:.2g}..{m['means max 100%']:.2g}, "
                          f"variances ≤ {m['var max 100%']:.2g} (per seed {spread.loc[k, ('var max 100%', 'min')]:.2g}"
                          f"..{spread.loc[k, ('var max 100%', 'max')]:.2g})",
                          verdict, unless or (NAN_NOTE if verdict == NOT_JUDGED else None)))
    growth = summary["var growth"]
    out.append(judged("deeper_layers_blow_up_more",
                      "Deeper layers blow up more: the variance growth (0 → 100 %) rises with depth",
                      "layer 8 ≈ 1x, layer 44 ≫ 1, layer 80 ≫ layer 44",
                      ", ".join(f"layer {k}: {g:.3g}x" for k, g in growth.items()),
                      holds(bool(growth.is_monotonic_increasing and growth.iloc[-1] > 1e3)), unless))
    there = match.loc["median"]
    verdicts = [same_scale(there[f"layer {k} var there"], paper[k][2]) for k in layers[:-1]]
    out.append(judged("one_rate_matches_every_layer",
                      f"One rate gives the paper's scale in every layer: where layer {layers[-1]}'s variance "
                      "reaches the paper's, the other layers' match it too",
                      ", ".join(f"layer {k}: variances ≤ {paper[k][2]:.2g}" for k in layers[:-1]),
                      (f"at rate ≈ {there['rate']:.2g}: "
                       + ", ".join(f"layer {k}: ≤ {there[f'layer {k} var there']:.2g}" for k in layers[:-1]))
                      if np.isfinite(there["rate"]) else
                      f"no rate: layer {layers[-1]} does not reach the paper's variance within the update",
                      all_of(verdicts) if np.isfinite(there["rate"]) else NO,
                      unless or (NAN_NOTE if np.isfinite(there["rate"]) and all_of(verdicts) == NOT_JUDGED else None)))
    late = summary.loc[layers[-1], "visible from %"]
    out.append(judged("blow_up_late_in_step",
                      f"The blow-up happens late in the step: layer {layers[-1]}'s variances are flat on the "
                      "linear colour scale until near the end", "visible from ≈ 80..90 % of the step",
                      f"visible (≥ 1 % of the final largest variance) from {late:.0f} % of the step",
                      at_least(late, 75), unless))
    return out


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

Runs = NetworkRuns  # its config and its runs


def load(source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> Runs:
    """The runs of `arch` (None: the preset's) with convolutions initialised by `init`."""
    return network_runs(MEASUREMENT, source, arch, init)


@dataclass(frozen=True)
class Tables:
    layers: tuple[int, ...]   # the profiled layers
    paper: dict               # `paper_scales`: the paper's colour bars, by layer
    layers_by_seed: pd.DataFrame  # `layer_table`
    summary: pd.DataFrame     # `layer_summary`: the median over the seeds
    spread: pd.DataFrame      # `layer_spread`: the range over the seeds
    match: pd.DataFrame       # `match_table`: the rate at which each layer reaches the paper's scale


def tables(found: Runs) -> Tables:
    cfg = found.cfg
    by_seed, paper = layer_table(found.runs, cfg.layers), paper_scales(cfg.layers)
    return Tables(cfg.layers, paper, by_seed, layer_summary(by_seed), layer_spread(by_seed),
                  match_table(found.runs, cfg.layers, cfg.lr, paper))


def claims(t: Tables, preset: str) -> list[Claim]:
    return judge(t.summary, t.spread, t.match, t.layers, preset)
