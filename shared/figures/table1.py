"""Table 1 of the paper: do the examples of a mini-batch agree on the gradient? From stored runs of
`measure_contributions` (below), the figure's measurement.

For a few conv layers of the network with BN and the same network without it, at initialisation,
on one mini-batch, a run holds per layer a = Σ_b |g_b| (the per-example contributions to the
kernel's gradient, summed in absolute value) and b = |Σ_b g_b| (what survives the sum), averaged
over the kernel's entries, their ratio a / b (1: every example agrees) and the median over the
entries of each entry's own ratio. The paper finds a and b close without BN and about two orders
of magnitude apart with BN; √B is the ratio of B independent contributions with random signs.
The notebook `08_table1_contributions` calls these.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import probes
from ..atinit import first_batch, network_pair
from ..claims import Claim, holds, judged, unjudged_reason
from ..config import DEFAULT_INIT, ProbeConfig
from ..data import Cifar10
from ..paper import TABLE1_RATIO
from ..plotting import seed_count
from .protocol import SMOKE_NETWORK, Measurement, NetworkRuns, Source, network_runs

EXPERIMENT = "table1_contributions"

# The tables are keyed by the stored runs' names: the networks ("bn", "no_bn") and their statistics
# per layer ("sum_abs", ...); these are their labels in the plots and in the tables as shown (`shown`)
NETS = {"bn": "with BN", "no_bn": "w/o BN"}
STATS = {"sum_abs": "Σ|g_b|", "abs_sum": "|Σ g_b|", "ratio": "ratio", "entry_ratio_median": "entry ratio (median)",
         "entry_ratio_mean": "entry ratio (mean)", "norm_ratio": "norm ratio", "entries": "entries"}
# The statistics the paper may have reported as "the" ratio (it does not say), as the ablation
# compares them: per layer, averaged over layers and seeds; POOLED: one ratio of averages over
# every entry of every layer shown. Their keys, and their names in the claims and the shown table
STATISTICS = {"ratio": "ratio of averages (ours)", "entry_ratio_median": "median of entry ratios",
              "entry_ratio_mean": "mean of entry ratios", "norm_ratio": "ratio of norms"}
POOLED = "pooled_ratio"
STATISTIC_NAMES = {**STATISTICS, POOLED: "ratio of averages, layers pooled"}


# ---- the measurement: its config, measure function and presets ----

@dataclass(frozen=True)
class ContributionConfig(ProbeConfig):
    """Table 1: per-example gradient contributions of a few convolution layers."""
    layers: tuple[int, ...] = (2, 20, 38, 55, 74, 92, 109)  # of ResNet-110; scaled to other depths


def measure_contributions(cfg: ContributionConfig, data: Cifar10, seed: int) -> dict:
    x, y = first_batch(cfg, data, seed)
    result = {}
    for name, model in network_pair(cfg, seed, x.device).items():
        result[name] = {str(k): probes.contribution_agreement(
            probes.per_example_contributions(model, x, y, k)) for k in cfg.layers}
    return result


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": ContributionConfig(), "smoke": ContributionConfig(**SMOKE_NETWORK)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_contributions)


def contribution_table(runs: list[dict]) -> pd.DataFrame:
    """Rows (layer, seed), columns (network, statistic), the keys of NETS and STATS: every run's
    numbers (NaN where a run lacks a statistic)."""
    long = pd.DataFrame([{"layer": int(k), "seed": r.provenance["seed"],
                          **{(name, stat): r.result[name][k].get(stat, float("nan"))
                             for name in NETS for stat in STATS}}
                         for r in runs for k in r.result["bn"]]).set_index(["layer", "seed"]).sort_index()
    long.columns = pd.MultiIndex.from_tuples(long.columns)
    return long


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table with (network, statistic) columns as the notebook shows it: by their labels."""
    return table.rename(columns={**NETS, **STATS})


def layer_means(long: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the mean over the seeds of every column (the ratio: the mean of the per-seed ratios)."""
    return long.groupby("layer").mean()


def layer_stds(long: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the (sample) std over the seeds of every column (NaN for a single seed)."""
    return long.groupby("layer").std()


def seed_ratios(long: pd.DataFrame) -> pd.DataFrame:
    """The ratio per layer (rows) and network and seed, as shown (columns "with BN, seed 0", ...)."""
    ratios = long.xs("ratio", axis=1, level=1).unstack("seed")
    ratios.columns = [f"{NETS[net]}, seed {s}" for net, s in ratios.columns]
    return ratios


def random_sign_ratio(batch_size: int) -> float:
    """The yardstick √B: about the ratio Σ|g_b| / |Σ g_b| of B independent random-sign contributions."""
    return np.sqrt(batch_size)


def plot_contributions(axes, means: pd.DataFrame, stds: pd.DataFrame, sqrt_b: float) -> None:
    """Left and middle: Σ|g_b| and |Σ g_b| per layer with and without BN (mean over seeds, error
    bars the std; one log scale). Right: their ratio, with the yardsticks 1, √B and the paper's ~100."""
    layers = means.index.to_numpy()
    axes[1].sharey(axes[0])  # the same scale: without BN the contributions are far larger
    x, width = np.arange(len(layers)), 0.38
    for ax, net in zip(axes[:2], NETS):
        for i, stat in enumerate(("sum_abs", "abs_sum")):
            ax.bar(x + (i - 0.5) * width, means[net, stat], width, yerr=stds[net, stat].fillna(0),
                   color=f"C{i}", label=STATS[stat], capsize=2)
        ax.set(yscale="log", title=NETS[net], xlabel="layer", ylabel="mean over kernel entries",
               xticks=x, xticklabels=layers)
    axes[0].legend()
    ax = axes[2]
    for i, (net, label) in enumerate(NETS.items()):
        ax.bar(x + (i - 0.5) * width, means[net, "ratio"], width, yerr=stds[net, "ratio"].fillna(0),
               color=f"C{i + 2}", label=label, capsize=2)
    for level, text, style in ((TABLE1_RATIO["bn"], "paper ~100", "--"), (sqrt_b, f"√B = {sqrt_b:.3g}", ":"),
                               (1, "1 (all agree)", "-.")):
        ax.axhline(level, color="k", ls=style, lw=1, label=text)
    ax.set(yscale="log", ylim=(0.5, 1000), title="Σ|g_b| / |Σ g_b|", xlabel="layer", ylabel="ratio",
           xticks=x, xticklabels=layers)
    ax.legend(loc="upper right", fontsize=8, ncol=2)


def judge(means: pd.DataFrame, n_seeds: int, batch_size: int, preset: str) -> list[Claim]:
    """Table 1's claims from `layer_means`'s table: without BN the ratio is close to 1 (yes below
    2 at every layer, partly below √B / 2); with BN about 100 (yes for a mean in [30, 300],
    partly if above 3 times the no-BN mean); BN's ratio above 3 times no BN's at every layer; and
    our readings: with BN about √B (within a factor 2), and the entry-by-entry median in [30, 300]
    (partly if at least above the ratio of averages with BN, the direction of "larger"; else no).
    Not judged for the smoke preset."""
    unless = unjudged_reason(preset)
    sqrt_b = random_sign_ratio(batch_size)
    bn_ratio, no_bn_ratio = means["bn", "ratio"], means["no_bn", "ratio"]
    bn_entry, no_bn_entry = means["bn", "entry_ratio_median"], means["no_bn", "entry_ratio_median"]
    separation = bn_ratio / no_bn_ratio
    n_layers = len(means)
    return [
        judged("no_bn_sums_close",
               "Without BN Σ|g_b| and |Σ g_b| are close (the examples agree on the sign)", "close (ratio ≈ 1)",
               f"ratio {no_bn_ratio.min():.3g}–{no_bn_ratio.max():.3g} over {n_layers} layers "
               f"(mean {no_bn_ratio.mean():.3g}; {n_seeds} seeds)",
               holds(no_bn_ratio.max() < 2, partly=no_bn_ratio.max() < sqrt_b / 2), unless),
        judged("bn_two_orders_apart",
               "With BN they differ by about two orders of magnitude", f"≈ {TABLE1_RATIO['bn']:.0f}x",
               f"ratio {bn_ratio.min():.3g}–{bn_ratio.max():.3g} (mean {bn_ratio.mean():.3g})",
               holds(30 <= bn_ratio.mean() <= 300, partly=bn_ratio.mean() > 3 * no_bn_ratio.mean()), unless),
        judged("bn_disagree_every_layer",
               "With BN the examples disagree far more than without, at every layer", "every layer shown",
               f"{int((separation > 3).sum())} of {n_layers} layers; BN ratio / no-BN ratio "
               f"{separation.min():.3g}–{separation.max():.3g}", holds((separation > 3).all()), unless),
        judged("bn_random_signs", "(our reading) With BN the contributions cancel like independent random signs",
               "not in the paper", f"ratio {bn_ratio.mean():.3g} vs √B = {sqrt_b:.3g}",
               holds(0.5 <= bn_ratio.mean() / sqrt_b <= 2), unless),
        judged("entry_median_gap_larger",
               "(our reading) Averaged entry by entry (median of each entry's ratio) the gap is larger",
               "not stated", f"with BN {bn_entry.min():.3g}–{bn_entry.max():.3g} (mean {bn_entry.mean():.3g}); "
               f"w/o BN {no_bn_entry.min():.3g}–{no_bn_entry.max():.3g}",
               holds(30 <= bn_entry.mean() <= 300, partly=bool(bn_entry.mean() > bn_ratio.mean())), unless),
    ]


def pooled_ratio(long: pd.DataFrame, net: str) -> pd.Series:
    """Per seed, one ratio of averages over every entry of every layer shown: Σ_layers n_l a_l /
    Σ_layers n_l b_l, with a_l, b_l the layer's averages and n_l its number of entries."""
    n = long[net, "entries"]
    a, b = (long[net, "sum_abs"] * n).groupby("seed").sum(), (long[net, "abs_sum"] * n).groupby("seed").sum()
    return a / b


def statistics_table(long: pd.DataFrame) -> pd.DataFrame:
    """Rows: the candidate statistics (STATISTICS' keys, then POOLED); columns (network, "mean" /
    "min" / "max"): the mean over layers and seeds and the range over layers of the per-layer
    means (NaN where the stored runs predate a statistic)."""
    means = layer_means(long)
    rows = {stat: {(net, what): getattr(means[net, stat], what)() for net in NETS for what in ("mean", "min", "max")}
            for stat in STATISTICS}
    if long.xs("entries", axis=1, level=1).notna().all().all():
        rows[POOLED] = {(net, what): pooled_ratio(long, net).mean() if what == "mean" else np.nan
                        for net in NETS for what in ("mean", "min", "max")}
    return pd.DataFrame(rows).T


def shown_statistics(stats: pd.DataFrame) -> pd.DataFrame:
    """`statistics_table` as the notebook shows it: rows by name, columns "with BN: mean", ..."""
    out = stats.rename(index=STATISTIC_NAMES)
    out.columns = [f"{NETS[net]}: {what}" for net, what in stats.columns]
    return out


def statistic_claim(stats: pd.DataFrame, preset: str) -> Claim:
    """(ablation) Which statistic gives the paper's pair, ≈100x with BN (within [30, 300]) and
    close without (below 2)? Yes naming the statistics that do; partly if one gives ≈100x with BN
    and at least 10x less without; no otherwise."""
    bn, no_bn = stats["bn", "mean"], stats["no_bn", "mean"]
    hundred = [stat for stat in stats.index if 30 <= bn[stat] <= 300]
    fits = [STATISTIC_NAMES[stat] for stat in hundred if no_bn[stat] < 2]
    apart = [STATISTIC_NAMES[stat] for stat in hundred if bn[stat] >= 10 * no_bn[stat]]
    listed = "; ".join(f"{STATISTIC_NAMES[stat]} {bn[stat]:.3g} / {no_bn[stat]:.3g}"
                      for stat in stats.index if not np.isnan(bn[stat]))
    named = fits or apart
    return judged("ablation_averaging_gives_paper_pair",
                  "(ablation) Some way of averaging gives ≈100x with BN and ≈1 without",
                  "≈ 100x / close", f"with BN / w/o BN: {listed}" + (f" — {'fits' if fits else '≈100x with BN'}: "
                                                                    f"{', '.join(named)}" if named else ""),
                  holds(bool(fits), partly=bool(apart)), unjudged_reason(preset))


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

Runs = NetworkRuns  # its config and its runs


def load(source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> Runs:
    """The runs of `arch` (None: the preset's) with convolutions initialised by `init`."""
    return network_runs(MEASUREMENT, source, arch, init)


@dataclass(frozen=True)
class Tables:
    batch_size: int
    contributions: pd.DataFrame  # `contribution_table`: rows (layer, seed), columns (network, quantity)
    means: pd.DataFrame          # `layer_means`: over the seeds
    stds: pd.DataFrame           # `layer_stds`
    statistics: pd.DataFrame     # `statistics_table`: the candidate statistics for "the" ratio


def tables(found: Runs) -> Tables:
    long = contribution_table(found.runs)
    return Tables(found.cfg.batch_size, long, layer_means(long), layer_stds(long), statistics_table(long))


def claims(t: Tables, preset: str) -> list[Claim]:
    """Table 1's claims (`judge`), then the one on the statistic (`statistic_claim`)."""
    return (judge(t.means, seed_count(t.contributions), t.batch_size, preset)
            + [statistic_claim(t.statistics, preset)])
