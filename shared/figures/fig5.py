"""Figure 5 from stored runs: channel means and standard deviations vs depth, at initialisation.

Bjorck et al. (2018), Fig 5: for layers 6, 18, ..., 102 and 110 of ResNet-110 at initialisation,
the log of the channel means and channel standard deviations of the layer's output, with and
without BN (mean over networks, error bars the std over networks). Without BN both rise roughly
linearly in the log with depth (the means from about 10^-1.5 to 10^3.5); with BN they stay within
about 10^-1..10^1. Each run of "fig5_depth_profile" (`measure_depth_profile`) stores, per network
("bn", "no_bn") and profiled layer, the mean over channels of |channel mean| ("abs_mean") and the
mean channel std ("std"). The notebook `05_fig5_depth_profile` calls these: the log10 profile, its
growth with depth, the comparison of initialisation schemes and architectures, the claims and the
plots.
"""

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .. import probes
from ..atinit import first_batch, network_pair
from ..claims import Claim, at_least, holds, judged, slug, unjudged_reason, within_range
from ..config import DEFAULT_INIT, ProbeConfig, added, check_choice
from ..data import Cifar10
from ..models import INITS
from ..paper import FIG5_LAYERS, FIG5_LOG, fig5_curve_distances
from .protocol import SMOKE_NETWORK, Measurement, Source, probe_runs

EXPERIMENT = "fig5_depth_profile"

# The four curves of the figure: their keys in the tables, "<network>_<stored statistic>" (the
# stored runs' names), and their labels in the plots and the tables as shown (`shown`)
CURVES = {f"{net}_{stat}": (net, stat) for net in ("bn", "no_bn") for stat in ("abs_mean", "std")}
SERIES = {"bn_abs_mean": "channel means, with BN", "bn_std": "channel stds, with BN",
          "no_bn_abs_mean": "channel means, w/o BN", "no_bn_std": "channel stds, w/o BN"}
ARCHS = ("resnet110", "resnet101")  # the architectures compared besides the current one

# the paper's numbers as the claims read them off its figure (log10): the means without BN grow
# about 5 decades from layer 6 to 110, the stds about 0.5 decade per 12 layers
PAPER_MEANS_DECADES = 5
PAPER_STDS_SLOPE_12 = 0.5

# The paper's axis reads "Log [magnitude]" without a base: our logs under each reading, in the
# units the paper's numbers would then be in (log10: decades; ln: e-folds)
READINGS = {"log10": 1.0, "ln": math.log(10)}  # reading -> factor on log10
UNITS = {"log10": "decades", "ln": "ln units"}


# ---- the measurement: its config, measure function and presets ----

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


def measure_depth_profile(cfg: DepthConfig, data: Cifar10, seed: int) -> dict:
    x, _ = first_batch(cfg, data, seed)
    result = {}
    for name, model in network_pair(cfg, seed, x.device).items():
        layers = probes.layers_to_profile(model, cfg.layer_step, cfg.first_layer)
        profile = probes.depth_profile(model, x, layers, cfg.channels)
        result[name] = {str(k): v for k, v in profile.items()}
    return result


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": DepthConfig(), "smoke": DepthConfig(**SMOKE_NETWORK)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_depth_profile)


def log_profile(runs: list[dict], reading: str = "log10") -> pd.DataFrame:
    """Rows (layer, seed), columns the four curves (CURVES' keys): the log of the stored magnitudes
    under `reading` (READINGS: log10 or the natural log)."""
    factor = READINGS[reading]
    rows = [{"layer": int(k), "seed": r.provenance["seed"],
             **{key: factor * np.log10(r.result[name][k][stat]) for key, (name, stat) in CURVES.items()}}
            for r in runs for k in r.result["bn"]]
    return pd.DataFrame(rows).set_index(["layer", "seed"]).sort_index()


def profile_stats(logs: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the mean and std over seeds of each series of `log_profile` (columns (series,
    "mean"|"std"))."""
    return logs.groupby("layer").agg(["mean", "std"])


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table keyed by the curves (in its rows or columns) as the notebook shows it: by their labels."""
    return table.rename(index=SERIES, columns=SERIES)


def growth(logs: pd.DataFrame, curve: str) -> dict:
    """How curve `curve` of `log_profile` grows with depth: the slope of a line fitted to it
    against the layer over the convolution layers (every profiled layer but the last, the
    classifier's), per layer and per 12 layers (mean over seeds) with its std over seeds, the R² of
    the line fitted to the mean over seeds, and the mean curve's first and last values, their
    difference (first to last, in the log's units), its minimum and maximum."""
    layers = sorted(logs.index.get_level_values("layer").unique())
    conv = layers[:-1]
    per_seed = logs.loc[conv, curve].unstack("seed")
    slopes = [np.polyfit(conv, per_seed[s], 1)[0] for s in per_seed]
    mean = per_seed.mean(axis=1).to_numpy()
    fitted = np.polyval(np.polyfit(conv, mean, 1), conv)
    r2 = 1 - np.sum((mean - fitted) ** 2) / np.sum((mean - mean.mean()) ** 2)
    values = logs[curve].groupby("layer").mean()
    return {"slope / layer": np.mean(slopes), "slope / 12 layers": 12 * np.mean(slopes),
            "slope / 12 layers, std over seeds": 12 * np.std(slopes, ddof=1) if len(slopes) > 1 else np.nan,
            "R2": r2, f"log at {layers[0]}": values.iloc[0], f"log at {layers[-1]}": values.iloc[-1],
            "first to last": values.iloc[-1] - values.iloc[0],
            "min log": values.min(), "max log": values.max()}


def growth_table(logs: pd.DataFrame) -> pd.DataFrame:
    """`growth` of each curve, one row per curve."""
    return pd.DataFrame({curve: growth(logs, curve) for curve in CURVES}).T


def comparison_row(runs: list[dict]) -> dict:
    """One network's runs summarised for the comparison of schemes: seeds, the growth without BN
    of the means and stds (decades first to last), the stds' slope per 12 layers, the means' max,
    and the range of the two BN mean curves."""
    logs = log_profile(runs)
    means, stds = growth(logs, "no_bn_abs_mean"), growth(logs, "no_bn_std")
    bn = logs[["bn_abs_mean", "bn_std"]].groupby("layer").mean()
    return {"seeds": len(runs),
            "no_bn means: decades": means["first to last"],
            "no_bn stds: decades": stds["first to last"],
            "no_bn stds: slope / 12 layers": stds["slope / 12 layers"],
            "no_bn means: max log10": means["max log"],
            "bn: min log10": bn.min().min(), "bn: max log10": bn.max().max()}


def comparison_table(found: dict[tuple[str, str], list[dict]]) -> pd.DataFrame:
    """`comparison_row` per (arch, init) with runs, indexed by (arch, init), in `found`'s order."""
    return pd.DataFrame([{"arch": a, "init": scheme, **comparison_row(runs)}
                         for (a, scheme), runs in found.items() if runs]).set_index(["arch", "init"])


def plot_profile(ax, logs: pd.DataFrame) -> None:
    """The figure: the mean over seeds of each curve against the layer, error bars the std over
    seeds."""
    stats = profile_stats(logs)
    layers = stats.index.to_numpy()
    for curve, label in SERIES.items():
        ax.errorbar(layers, stats[curve, "mean"], yerr=stats[curve, "std"].fillna(0), label=label)
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


def judge(growths: pd.DataFrame, profile: pd.DataFrame, n_seeds: int, preset: str,
          reading: str = "log10") -> list[Claim]:
    """Fig 5's claims from `growth_table` and `profile_stats` of the logs under `reading`: linear
    growth in the log without BN (log10 only: it does not depend on the base), its size (from the
    first to the last layer, slope per 12 layers), BN's range, the spread between networks and
    the gap between the networks at the last convolution; not judged for the smoke preset."""
    unless = unjudged_reason(preset)
    unit = UNITS[reading]
    tag = "" if reading == "log10" else f"({reading} reading) "
    key = "" if reading == "log10" else f"{slug(reading)}_"
    layers = list(profile.index)
    g = growths
    means, stds = g.loc["no_bn_abs_mean"], g.loc["no_bn_std"]
    bn_low = min(g.loc["bn_abs_mean", "min log"], g.loc["bn_std", "min log"])
    bn_high = max(g.loc["bn_abs_mean", "max log"], g.loc["bn_std", "max log"])
    last_conv = layers[-2]
    gap = profile.loc[last_conv, ("no_bn_abs_mean", "mean")] - profile.loc[last_conv, ("bn_abs_mean", "mean")]
    growth, slope = means["first to last"], stds["slope / 12 layers"]
    linear = [judged("no_bn_linear_in_log",
                     "Without BN, channel means and stds rise roughly linearly in log with depth",
                     "straight-ish rising lines",
                     f"R² of a line: means {means['R2']:.2f}, stds {stds['R2']:.2f}; slopes > 0",
                     holds(bool(min(means["R2"], stds["R2"]) >= 0.9
                                and min(means["slope / layer"], stds["slope / layer"]) > 0)), unless)]
    return (linear if reading == "log10" else []) + [
        judged(f"{key}no_bn_means_grow", f"{tag}Without BN, channel means grow from layer {layers[0]} to {layers[-1]}",
               f"≈ -1.5 → 3.5 (≈ 5 {unit})",
               f"{means[f'log at {layers[0]}']:.2g} → {means[f'log at {layers[-1]}']:.2g} "
               f"({growth:.2g} {unit})",
               within_range(growth, PAPER_MEANS_DECADES / 1.5, PAPER_MEANS_DECADES * 1.5,
                            partly=(2, math.inf)), unless),
        judged(f"{key}no_bn_stds_fixed_factor",
               f"{tag}Without BN, channel stds grow by a fixed factor per block", f"≈ 0.5 {unit[:-1]} per 12 layers",
               f"{slope:.2g} {unit[:-1]} per 12 layers ({stds['slope / layer']:.2g} per layer)",
               holds(bool(PAPER_STDS_SLOPE_12 / 1.5 <= slope <= PAPER_STDS_SLOPE_12 * 1.5),
                     partly=bool(slope > 0.1)), unless),
        judged(f"{key}bn_within_one",
               f"{tag}With BN, channel means and stds stay within about -1..1 ({reading})", "-1 .. 1",
               f"{bn_low:.2g} .. {bn_high:.2g}", holds(bool(-1 <= bn_low and bn_high <= 1)), unless),
        spread_claim(profile, n_seeds, preset, reading),
        judged(f"{key}top_gap_orders_of_magnitude",
               f"{tag}At the top (layer {last_conv}) the means without BN are orders of magnitude above those with BN",
               f"≈ 3 {unit}", f"{gap:.2g} {unit}", at_least(gap, 2, partly=1), unless),
    ]


def spread_claim(profile: pd.DataFrame, n_seeds: int, preset: str, reading: str = "log10",
                 channels: str = "all") -> Claim:
    """The paper's error bars (std over networks, about 0.5 to 1.3 in its units) against ours,
    from `profile_stats` of logs under `reading`, measured over `channels` ("all" or "first")."""
    spread = profile.xs("std", axis=1, level=1).to_numpy()
    unit = UNITS[reading]
    how = [] if reading == "log10" else [f"{reading} reading"]
    how += [] if channels == "all" else ["channel 0 only, the blog's way"]
    tag = f"({', '.join(how)}) " if how else ""
    key = ("" if reading == "log10" else f"{slug(reading)}_") + "networks_differ" + (
        "" if channels == "all" else f"_{slug(channels)}_channel")
    return judged(key, f"{tag}Networks differ a lot: error bars (std over networks of the log) of about 1",
                  f"≈ 0.5 .. 1.3 {unit}", f"{spread.min():.2g} .. {spread.max():.2g} {unit} "
                  f"(mean {spread.mean():.2g}, {n_seeds} networks)",
                  at_least(spread.mean(), 0.4, partly=0.2), unjudged_reason(preset))


def channel0_config(cfg):
    """`cfg` measured the blog's way: channel 0 of each layer instead of the mean over channels."""
    return replace(cfg, channels="first")


def reading_logs(runs: list[dict]) -> dict[str, pd.DataFrame]:
    """`log_profile` under each of READINGS (none without runs)."""
    return {reading: log_profile(runs, reading) for reading in READINGS} if runs else {}


def seed_number(logs: pd.DataFrame) -> int:
    return logs.index.get_level_values("seed").nunique()


def all_claims(logs: dict[str, pd.DataFrame], channel0_logs: dict[str, pd.DataFrame], preset: str) -> list[Claim]:
    """Fig 5's claims under both readings of the paper's log (`reading_logs`: log10 first, then
    ln), and the error-bar claim measured the blog's way (channel 0) under both, where it has runs."""
    out = []
    for reading, found in logs.items():
        out += judge(growth_table(found), profile_stats(found), seed_number(found), preset, reading)
    for reading, found in channel0_logs.items():
        out.append(spread_claim(profile_stats(found), seed_number(found), preset, reading, "first"))
    return out


def readings_table(runs: list[dict]) -> pd.DataFrame:
    """Per curve, the RMS gap between our curve (geometric mean over seeds) and the paper's
    values, in the paper's units under each reading of its log."""
    gaps = fig5_curve_distances([r.result for r in runs])
    return pd.DataFrame({f"{net}_{stat}": values for (net, stat), values in gaps.items()}).T


def spread_table(runs: list[dict], channel0_runs: list[dict]) -> pd.DataFrame:
    """Per curve, the mean over layers of the std over networks of log10 (the error bars), over
    all channels (ours) and channel 0 only (the blog's way)."""
    columns = {"all channels": runs, "channel 0": channel0_runs}
    return pd.DataFrame({name: profile_stats(log_profile(rs)).xs("std", axis=1, level=1).mean()
                         for name, rs in columns.items() if rs})


def plot_readings(axes, runs: list[dict]) -> None:
    """One panel per reading of the paper's log: our four curves (mean over seeds, lines) and the
    paper's values read off its figure (markers, same colours)."""
    for ax, reading in zip(axes, READINGS):
        stats = profile_stats(log_profile(runs, reading))
        layers = stats.index.to_numpy()
        for i, (curve, label) in enumerate(SERIES.items()):
            ax.plot(layers, stats[curve, "mean"], color=f"C{i}", label=f"{label} (ours)")
            ax.plot(FIG5_LAYERS, FIG5_LOG[CURVES[curve]], "o", color=f"C{i}", ms=4, mfc="none")
        ax.set_xticks(layers)
        ax.set(xlabel="Layer", ylabel=f"{reading} [magnitude]",
               title=f"read as {reading} (circles: the paper's values)")


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    """Fig 5's stored runs: the network's, measured on channel 0, and the comparison's."""
    cfg: DepthConfig
    runs: list[dict]                            # the network's, one per seed
    channel0: list[dict]                        # the same measured the blog's way (`channel0_config`)
    inits: dict[tuple[str, str], list[dict]]    # (arch, init) -> runs: every scheme of it and of ARCHS


def load(source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> Runs:
    """The runs of `arch` (None: the preset's) with convolutions initialised by `init`, measured on
    channel 0, and under every initialisation scheme of it and of ARCHS (computed only for `arch`)."""
    cfg = MEASUREMENT.config(source.preset, arch=arch, init=init)
    runs = probe_runs(MEASUREMENT, cfg, source)
    channel0 = probe_runs(MEASUREMENT, channel0_config(cfg), source)
    inits = {(a, scheme): probe_runs(MEASUREMENT, MEASUREMENT.config(source.preset, arch=a, init=scheme),
                                     source if a == cfg.arch else source.read_only)
             for a in dict.fromkeys([cfg.arch, *ARCHS]) for scheme in INITS}
    return Runs(cfg, runs, channel0, inits)


@dataclass(frozen=True)
class Tables:
    logs: dict[str, pd.DataFrame]           # `reading_logs`: per reading, rows (layer, seed)
    channel0_logs: dict[str, pd.DataFrame]  # the same, channel 0 only
    profile: pd.DataFrame     # `profile_stats` of the log10 profile: mean and std over the seeds
    growth: pd.DataFrame      # `growth_table` of it
    readings: pd.DataFrame    # `readings_table`: the gap to the paper's curves under each reading
    spread: pd.DataFrame      # `spread_table`: the error bars, all channels and channel 0
    inits: pd.DataFrame       # `comparison_table`: per (arch, init)


def tables(found: Runs) -> Tables:
    logs = reading_logs(found.runs)
    return Tables(logs, reading_logs(found.channel0), profile_stats(logs["log10"]), growth_table(logs["log10"]),
                  readings_table(found.runs), spread_table(found.runs, found.channel0),
                  comparison_table(found.inits))


def claims(t: Tables, preset: str) -> list[Claim]:
    return all_claims(t.logs, t.channel0_logs, preset)
