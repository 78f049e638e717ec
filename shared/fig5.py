"""Figure 5 from stored runs: channel means and standard deviations vs depth, at initialisation.

Bjorck et al. (2018), Fig 5: for layers 6, 18, ..., 102 and 110 of ResNet-110 at initialisation,
the log of the channel means and channel standard deviations of the layer's output, with and
without BN (mean over networks, error bars the std over networks). Without BN both rise roughly
linearly in the log with depth (the means from about 10^-1.5 to 10^3.5); with BN they stay within
about 10^-1..10^1. Each run of `shared.experiments`' "fig5_depth_profile" stores, per network
("bn", "no_bn") and profiled layer, the mean over channels of |channel mean| ("abs_mean") and the
mean channel std ("std"). The notebook `05_fig5_depth_profile` calls these: the log10 profile, its
growth with depth, the comparison of initialisation schemes and architectures, the claims and the
plots.
"""

import math

import numpy as np
import pandas as pd

from .claims import Claim, at_least, holds, judged, unjudged_reason, within_range

# the four curves of the figure: (network, stored statistic) -> label
SERIES = {("bn", "abs_mean"): "channel means, with BN", ("bn", "std"): "channel stds, with BN",
          ("no_bn", "abs_mean"): "channel means, w/o BN", ("no_bn", "std"): "channel stds, w/o BN"}
ARCHS = ("resnet110", "resnet101")  # the architectures compared besides the current one

# the paper's numbers as the claims read them off its figure (log10): the means without BN grow
# about 5 decades from layer 6 to 110, the stds about 0.5 decade per 12 layers
PAPER_MEANS_DECADES = 5
PAPER_STDS_SLOPE_12 = 0.5


def log_profile(runs: list[dict]) -> pd.DataFrame:
    """Rows (layer, seed), columns the four SERIES: log10 of the stored magnitudes."""
    rows = [{"layer": int(k), "seed": r["provenance"]["seed"],
             **{label: np.log10(r["result"][name][k][stat]) for (name, stat), label in SERIES.items()}}
            for r in runs for k in r["result"]["bn"]]
    return pd.DataFrame(rows).set_index(["layer", "seed"]).sort_index()


def profile_stats(logs: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the mean and std over seeds of each series of `log_profile` (columns (series,
    "mean"|"std"))."""
    return logs.groupby("layer").agg(["mean", "std"])


def growth(logs: pd.DataFrame, label: str) -> dict:
    """How series `label` of `log_profile` grows with depth: the slope of a line fitted to it
    against the layer over the convolution layers (every profiled layer but the last, the
    classifier's), per layer and per 12 layers (mean over seeds) with its std over seeds, the R² of
    the line fitted to the mean over seeds, and the mean curve's first and last values, their
    difference (decades first to last), its minimum and maximum."""
    layers = sorted(logs.index.get_level_values("layer").unique())
    conv = layers[:-1]
    per_seed = logs.loc[conv, label].unstack("seed")
    slopes = [np.polyfit(conv, per_seed[s], 1)[0] for s in per_seed]
    mean = per_seed.mean(axis=1).to_numpy()
    fitted = np.polyval(np.polyfit(conv, mean, 1), conv)
    r2 = 1 - np.sum((mean - fitted) ** 2) / np.sum((mean - mean.mean()) ** 2)
    curve = logs[label].groupby("layer").mean()
    return {"slope / layer": np.mean(slopes), "slope / 12 layers": 12 * np.mean(slopes),
            "slope / 12 layers, std over seeds": 12 * np.std(slopes, ddof=1) if len(slopes) > 1 else np.nan,
            "R2": r2, f"log10 at {layers[0]}": curve.iloc[0], f"log10 at {layers[-1]}": curve.iloc[-1],
            "decades first to last": curve.iloc[-1] - curve.iloc[0],
            "min log10": curve.min(), "max log10": curve.max()}


def growth_table(logs: pd.DataFrame) -> pd.DataFrame:
    """`growth` of each series, one row per series."""
    return pd.DataFrame({label: growth(logs, label) for label in SERIES.values()}).T


def comparison_row(runs: list[dict]) -> dict:
    """One network's runs summarised for the comparison of schemes: seeds, the growth without BN
    of the means and stds (decades first to last), the stds' slope per 12 layers, the means' max,
    and the range of the two BN mean curves."""
    logs = log_profile(runs)
    means, stds = growth(logs, SERIES["no_bn", "abs_mean"]), growth(logs, SERIES["no_bn", "std"])
    bn = logs[[SERIES["bn", "abs_mean"], SERIES["bn", "std"]]].groupby("layer").mean()
    return {"seeds": len(runs),
            "no_bn means: decades": means["decades first to last"],
            "no_bn stds: decades": stds["decades first to last"],
            "no_bn stds: slope / 12 layers": stds["slope / 12 layers"],
            "no_bn means: max log10": means["max log10"],
            "bn: min log10": bn.min().min(), "bn: max log10": bn.max().max()}


def comparison_table(found: dict[tuple[str, str], list[dict]]) -> pd.DataFrame:
    """`comparison_row` per (arch, init) with runs, indexed by (arch, init), in `found`'s order."""
    return pd.DataFrame([{"arch": a, "init": scheme, **comparison_row(runs)}
                         for (a, scheme), runs in found.items() if runs]).set_index(["arch", "init"])


def load_comparison(experiment: str, preset: str, arch: str, seed: int, seeds, data_dir) -> dict:
    """The stored runs of every initialisation scheme of `arch` and of ARCHS, {(arch, init): runs};
    the missing runs of `arch` (not the others) are computed for `seed` first."""
    from .experiments import experiment_config, run_experiment
    from .models import INITS
    from .results import config_runs

    found = {}
    for a in dict.fromkeys([arch, *ARCHS]):
        for scheme in INITS:
            cfg = experiment_config(experiment, preset, arch=a, init=scheme)
            if a == arch:
                run_experiment(experiment, cfg, seed, data_dir)
            found[a, scheme] = config_runs(experiment, cfg, seeds=seeds)
    return found


def plot_profile(ax, logs: pd.DataFrame) -> None:
    """The figure: the mean over seeds of each series against the layer, error bars the std over
    seeds."""
    stats = profile_stats(logs)
    layers = stats.index.to_numpy()
    for label in SERIES.values():
        ax.errorbar(layers, stats[label, "mean"], yerr=stats[label, "std"].fillna(0), label=label)
    ax.set_xticks(layers)
    ax.set(xlabel="Layer", ylabel="log10 [magnitude]")


def plot_inits(axes, found: dict[tuple[str, str], list[dict]], arch: str, schemes) -> None:
    """One panel per initialisation scheme of `arch`: its profile (`plot_profile`)."""
    for ax, scheme in zip(axes, schemes):
        runs = found[arch, scheme]
        plot_profile(ax, log_profile(runs))
        ax.set_title(f"{scheme} ({len(runs)} networks)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.label_outer()


def claims(growths: pd.DataFrame, profile: pd.DataFrame, n_seeds: int, preset: str) -> list[Claim]:
    """Fig 5's claims from `growth_table` and `profile_stats`: linear growth in the log without BN,
    its size (decades from the first to the last layer, slope per 12 layers), BN's range, the spread
    between networks and the gap between the networks at the last convolution; not judged for the
    smoke preset."""
    unless = unjudged_reason(preset)
    layers = list(profile.index)
    g = growths
    means, stds = g.loc[SERIES["no_bn", "abs_mean"]], g.loc[SERIES["no_bn", "std"]]
    bn_low = min(g.loc[SERIES["bn", "abs_mean"], "min log10"], g.loc[SERIES["bn", "std"], "min log10"])
    bn_high = max(g.loc[SERIES["bn", "abs_mean"], "max log10"], g.loc[SERIES["bn", "std"], "max log10"])
    spread = profile.xs("std", axis=1, level=1).to_numpy()
    last_conv = layers[-2]
    gap = (profile.loc[last_conv, (SERIES["no_bn", "abs_mean"], "mean")]
           - profile.loc[last_conv, (SERIES["bn", "abs_mean"], "mean")])
    decades, slope = means["decades first to last"], stds["slope / 12 layers"]
    return [
        judged("Without BN, channel means and stds rise roughly linearly in log with depth",
               "straight-ish rising lines",
               f"R² of a line: means {means['R2']:.2f}, stds {stds['R2']:.2f}; slopes > 0",
               holds(bool(min(means["R2"], stds["R2"]) >= 0.9
                          and min(means["slope / layer"], stds["slope / layer"]) > 0)), unless),
        judged(f"Without BN, channel means grow from layer {layers[0]} to {layers[-1]}",
               "≈ -1.5 → 3.5 (≈ 5 decades)",
               f"{means[f'log10 at {layers[0]}']:.2g} → {means[f'log10 at {layers[-1]}']:.2g} "
               f"({decades:.2g} decades)",
               within_range(decades, PAPER_MEANS_DECADES / 1.5, PAPER_MEANS_DECADES * 1.5,
                            partly=(2, math.inf)), unless),
        judged("Without BN, channel stds grow by a fixed factor per block", "≈ 0.5 decade per 12 layers",
               f"{slope:.2g} decade per 12 layers ({stds['slope / layer']:.2g} per layer)",
               holds(bool(PAPER_STDS_SLOPE_12 / 1.5 <= slope <= PAPER_STDS_SLOPE_12 * 1.5),
                     partly=bool(slope > 0.1)), unless),
        judged("With BN, channel means and stds stay within about -1..1 (log10)", "-1 .. 1",
               f"{bn_low:.2g} .. {bn_high:.2g}", holds(bool(-1 <= bn_low and bn_high <= 1)), unless),
        judged("Networks differ a lot: error bars (std over networks of log10) of about a decade",
               "≈ 0.5 .. 1.3 decades", f"{spread.min():.2g} .. {spread.max():.2g} decades "
               f"(mean {spread.mean():.2g}, {n_seeds} networks)",
               at_least(spread.mean(), 0.4, partly=0.2), unless),
        judged(f"At the top (layer {last_conv}) the means without BN are orders of magnitude above those with BN",
               "≈ 3 decades", f"{gap:.2g} decades", at_least(gap, 2, partly=1), unless),
    ]
