"""Beyond the paper: Brock, De & Smith's (2021) signal propagation at initialisation, per residual
block of the residual stream: the mean squared channel mean, the mean channel variance, and the
variance of the branch (`shared.probes.signal_propagation`). Its measurement ("signal_propagation"
in `shared.experiments`), its tables and its plot; the depth ladder (`shared.figures.depth`) and the
normalisation-free networks (`shared.figures.normfree`) read it.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import probes
from ..atinit import first_batch, network_pair
from ..config import ProbeConfig
from ..data import Cifar10
from .protocol import SMOKE_NETWORK, Measurement

EXPERIMENT = "signal_propagation"

# The tables are keyed by the stored runs' names: the networks ("bn", "no_bn", or an architecture
# such as "resnet110"), the statistics ("mean_sq"); these are their labels in the plot and in the
# tables as shown (`shown_spp`)
NETWORKS = {"bn": "with BN", "no_bn": "w/o BN"}
STATS = {"mean_sq": "mean squared channel mean", "variance": "mean channel variance",
         "branch_variance": "branch variance"}
ARCHS = ("resnet20", "resnet32", "resnet56", "resnet110")
# the networks `spp_frame` names: "resnet110" (one network) or "resnet110_no_bn" (one of a pair)
SPP_LABELS = {**{arch: f"ResNet-{arch.removeprefix('resnet')}" for arch in ARCHS},
              **{f"{arch}_{net}": f"ResNet-{arch.removeprefix('resnet')}, {label}"
                 for arch in ARCHS for net, label in NETWORKS.items()}}


# ---- the measurement: its config, measure function and presets ----

@dataclass(frozen=True)
class SignalConfig(ProbeConfig):
    """Beyond the paper: Brock et al.'s (2021) signal propagation, per residual block, at initialisation."""


def measure_signal_propagation(cfg: SignalConfig, data: Cifar10, seed: int) -> dict:
    x, _ = first_batch(cfg, data, seed)
    return {name: {str(b): v for b, v in probes.signal_propagation(model, x).items()}
            for name, model in network_pair(cfg, seed, x.device).items()}


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": SignalConfig(), "smoke": SignalConfig(**SMOKE_NETWORK)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_signal_propagation)


def spp_frame(runs_by_key: dict[str, list[dict]], network: str | None = None) -> pd.DataFrame:
    """Rows (network, block, seed), columns STATS' keys: the stored signal-propagation runs. A
    run's networks are named by the key of the dict ("resnet110") and, for a plain run holding
    both, "_bn" / "_no_bn" after it (`network` keeps one of "bn", "no_bn")."""
    rows = []
    for key, runs in runs_by_key.items():
        for r in runs:
            for name, blocks in r.result.items():
                if network is not None and name != network:
                    continue
                full = key if len(r.result) == 1 or network else f"{key}_{name}"
                rows += [{"network": full, "block": int(b), "seed": r.provenance["seed"], **stats}
                         for b, stats in blocks.items()]
    return pd.DataFrame(rows).set_index(["network", "block", "seed"])  # networks in the order given


def spp_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per network: log10 of each statistic at the first and the last block (mean over seeds of
    the log), and its growth per block (slope of a line through the mean curve), in columns
    (statistic, "log10 first" | "log10 last" | "per block")."""
    logs = np.log10(frame.replace(0, np.nan)).groupby(level=["network", "block"], sort=False).mean()
    rows = {}
    for net, curve in logs.groupby(level="network", sort=False):
        curve = curve.sort_index()
        curve = curve.droplevel("network")
        row = {}
        for stat in STATS:
            values = curve[stat].dropna()
            row[stat, "log10 first"] = values.iloc[0] if len(values) else np.nan
            row[stat, "log10 last"] = values.iloc[-1] if len(values) else np.nan
            row[stat, "per block"] = np.polyfit(values.index, values, 1)[0] if len(values) > 1 else np.nan
        rows[net] = row
    return pd.DataFrame(rows).T


def shown_spp(summary: pd.DataFrame, labels: dict[str, str] = SPP_LABELS) -> pd.DataFrame:
    """`spp_summary` as the notebook shows it: networks by `labels`, columns "mean channel
    variance: per block", ..."""
    out = summary.rename(index=labels)
    out.columns = [f"{STATS[stat]}: {what}" for stat, what in summary.columns]
    return out


def plot_spp(axes, frame: pd.DataFrame, labels: dict[str, str] | None = None, stats=("mean_sq", "variance")) -> None:
    """Brock et al.'s signal-propagation plot: per block, log10 of each of `stats` of the residual
    stream (by default the mean squared channel mean, left, and the mean channel variance, right),
    a line per network (mean over seeds of the log, band: range over seeds), named by `labels`
    (by default SPP_LABELS)."""
    labels = labels or SPP_LABELS
    logs = np.log10(frame.replace(0, np.nan))
    for ax, stat in zip(axes, stats):
        for i, (net, curve) in enumerate(logs[stat].groupby(level="network", sort=False)):
            by_block = curve.droplevel("network").groupby(level="block")
            ax.plot(by_block.mean().index, by_block.mean(), color=f"C{i}", label=labels.get(net, net))
            ax.fill_between(by_block.min().index, by_block.min(), by_block.max(), color=f"C{i}", alpha=0.2, lw=0)
        ax.set(xlabel="residual block", ylabel=f"log10 {STATS[stat]}", title=STATS[stat])


def fig5_relation(spp_runs: list[dict], fig5_runs: list[dict], network: str = "no_bn") -> pd.DataFrame:
    """Fig 5's per-convolution view beside the residual stream, for `network`: Fig 5's layer
    k = 2b is the first convolution of block b and reads the output of block b - 1, so with
    Xavier weights (variance about 1 / fan-in) its output's std is about the root mean square of
    that stream, sqrt(mean_sq + variance). Per Fig 5 convolution layer (mean over seeds of log10):
    the stream's RMS, the convolution output's std (Fig 5) and their difference."""
    rows = []
    for k in sorted(int(k) for k in fig5_runs[0].result[network])[:-1]:  # the last is the classifier
        if k % 2 or k < 4:
            continue
        block = str(k // 2 - 1)
        stream = np.mean([0.5 * np.log10(r.result[network][block]["mean_sq"] + r.result[network][block]["variance"])
                          for r in spp_runs])
        conv = np.mean([np.log10(r.result[network][str(k)]["std"]) for r in fig5_runs])
        rows.append({"layer": k, "reads block": int(block), "log10 RMS of the stream": stream,
                     "log10 std of the conv output (Fig 5)": conv, "difference": conv - stream})
    return pd.DataFrame(rows).set_index("layer")
