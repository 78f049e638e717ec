"""Figure 6 from stored probe runs: the gradients of the loss w.r.t. the logits at initialisation.

Bjorck et al. (2018), Fig 6: heatmaps of the gradients of the mean cross-entropy w.r.t. the 10
logits of ResNet-110 at initialisation, for the 128 images of one mini-batch (rows) and the 10
classes (columns), colour range about ±0.004. Without BN one column is positive for almost every
image (the network predicts one class whatever the input); with BN the positive entries are faint
and spread over the classes. For a batch of B images the gradient is (softmax - one_hot(label)) / B,
so the softmax probabilities can be recovered from it (`probabilities`).

The notebook `06_fig6_logit_gradients` calls these; every run is a stored result of the
"fig6_logit_gradients" experiment: per network ("no_bn", "bn") the "first_batch" gradients
([B, 10]), their "epoch_mean" over the full batches among the first `epoch_batches`, the
"dominant_column" of the first batch (the most common column of an image's largest gradient) and
the "dominant_fraction" of its images there, the "epoch_column_counts" (per column, how many images
of the averaged batches have their largest gradient there), the "epoch_dominant_fraction" and
"epoch_batches".
"""

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .. import probes
from ..atinit import network_pair
from ..claims import Claim, holds, judged, unjudged_reason
from ..config import DEFAULT_INIT, ProbeConfig
from ..data import Cifar10, TrainLoader
from .candidate_networks import candidate_config, candidates
from .protocol import SMOKE_NETWORK, Measurement, Source, probe_runs

EXPERIMENT = "fig6_logit_gradients"

NETWORKS = {"no_bn": "w/o BN", "bn": "with BN"}
PAPER_COLOUR_RANGE = 0.5  # the paper's colour bar, about ±0.004 for 128 images, is ±0.5 / batch size


# ---- the measurement: its config, measure function and presets ----

@dataclass(frozen=True)
class LogitGradientConfig(ProbeConfig):
    """Fig 6: gradients w.r.t. the logits at initialisation, one batch and an epoch's average."""
    epoch_batches: int | None = 50  # mini-batches averaged (6,400 images); None: a full epoch


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


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": LogitGradientConfig(), "smoke": LogitGradientConfig(**SMOKE_NETWORK, epoch_batches=3)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_logit_gradients)


def colour_limit(batch_size: int) -> float:
    """The heatmaps' colour range ±0.5 / batch size (±0.0039 for the paper's 128 images)."""
    return PAPER_COLOUR_RANGE / batch_size


def effective_columns(counts) -> float:
    """exp of the entropy of the column shares `counts / sum(counts)`: 1 when one column holds
    every image, 10 when the 10 columns hold as many."""
    p = np.asarray(counts, dtype=float) / np.sum(counts)
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def probabilities(grads: np.ndarray) -> np.ndarray:
    """The softmax probabilities back from the gradients of the mean cross-entropy ((p - onehot) / B):
    p = B * g, plus 1 at the label (the row's only negative entry; a row that is all zero is a sure,
    right prediction: its top p is 1 too)."""
    p = grads * len(grads)
    p[np.arange(len(p)), grads.argmin(1)] += 1
    return p


@dataclass(frozen=True)
class NetworkStats:
    """Network `name` of one run (`network_stats`), in the tables' column order."""
    column: int              # the first batch's dominant column (the most common largest gradient)
    fraction: float          # the share of the first batch's images there
    epoch_fraction: float    # the same over the averaged batches
    epoch_columns: float     # the averaged batches' effective number of columns
    column_gradient: float   # the mean gradient of the dominant column
    top_class_share: float   # the share of images whose most likely class is the most common one
    top_p: float             # the mean largest probability (the confidence)


def network_stats(result: dict, name: str) -> NetworkStats:
    """`NetworkStats` of network `name` of one run."""
    res = result[name]
    grads = np.array(res["first_batch"])
    probs = probabilities(grads)
    return NetworkStats(res["dominant_column"], res["dominant_fraction"], res["epoch_dominant_fraction"],
                        effective_columns(res["epoch_column_counts"]), grads[:, res["dominant_column"]].mean(),
                        np.bincount(probs.argmax(1), minlength=probs.shape[1]).max() / len(probs),
                        probs.max(1).mean())


# NetworkStats' fields -> the tables' column names (after the network's: "no_bn top p")
COLUMNS = {"column": "column", "fraction": "fraction", "epoch_fraction": "epoch fraction",
           "epoch_columns": "epoch columns", "column_gradient": "column gradient",
           "top_class_share": "top-class share", "top_p": "top p"}


def network_row(result: dict, name: str) -> dict:
    """`network_stats` as a table row, under COLUMNS' names after the network's."""
    stats = asdict(network_stats(result, name))
    return {f"{name} {label}": stats[field] for field, label in COLUMNS.items()}


def column_table(runs: list[dict]) -> pd.DataFrame:
    """`network_row` of both networks (without BN first) for every run, indexed by seed."""
    rows = [{"seed": r.provenance["seed"], **{k: v for name in NETWORKS
                                                  for k, v in network_row(r.result, name).items()}}
            for r in runs]
    return pd.DataFrame(rows).set_index("seed")


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The mean and standard deviation (ddof 1) over the seeds of every column but the dominant
    columns' indices."""
    return table.drop(columns=[f"{name} column" for name in NETWORKS]).agg(["mean", "std"])


def plot_heatmaps(fig, axes, result: dict, vmax: float) -> None:
    """A 2 x 2 grid of one run's heatmaps (`seaborn.heatmap`) on a diverging colour map centred at 0,
    range ±`vmax`: rows the first mini-batch and the mean over the averaged batches, columns without
    BN and with BN; a colour bar each (`fig` is the figure the axes belong to)."""
    for row, (key, what) in enumerate((("first_batch", "first mini-batch"),
                                       ("epoch_mean", f"mean over {result['bn']['epoch_batches']} mini-batches"))):
        for col, (name, title) in enumerate(NETWORKS.items()):
            ax = axes[row, col]
            grads = np.array(result[name][key])
            sns.heatmap(grads, ax=ax, cmap="RdBu_r", vmin=-vmax, vmax=vmax,  # symmetric: white at 0
                        xticklabels=False, yticklabels=False, cbar_kws={"label": "Gradient"},
                        rasterized=True)  # the SVG embeds the cells as an image, as imshow did
            images = np.arange(0, len(grads), 20)
            ax.set_xticks(np.arange(grads.shape[1]) + 0.5, range(grads.shape[1]))  # cell i spans [i, i + 1]
            ax.set_yticks(images + 0.5, images, rotation=0)
            ax.set(title=f"{title}, {what}", xlabel="Class activation", ylabel="Image in batch")
            ax.grid(False)


def plot_column_shares(axes, runs: list[dict]) -> None:
    """Per network (without BN, with BN), the share of the images whose largest gradient is in each
    column over the averaged batches, columns sorted from the most to the least common, a line per
    seed."""
    for ax, (name, title) in zip(axes, NETWORKS.items()):
        for r in runs:
            counts = np.sort(r.result[name]["epoch_column_counts"])[::-1]
            ax.plot(range(1, len(counts) + 1), counts / counts.sum(), marker="o", ms=3,
                    label=f"seed {r.provenance['seed']}")
        ax.set(title=title, xlabel="column rank", ylabel="share of images", xticks=range(1, 11), ylim=(0, 1.02))
    axes[1].legend(fontsize=7)


FAINT_TOP_P = 0.5  # with BN "faint": the mean top probability at most this (the rule, shown with our number)


def judge(table: pd.DataFrame, summary: pd.DataFrame, preset: str) -> list[Claim]:
    """Fig 6's claims from `column_table` and its `seed_summary` (means over seeds): without BN one
    class predicted for every image (first batch and over many batches) and its column at the top of
    the colour scale; with BN the largest gradients spread over the classes and faint. Not judged
    for the smoke preset."""
    unless = unjudged_reason(preset)
    m = summary.loc["mean"]
    no_bn_share, bn_share = m["no_bn top-class share"], m["bn top-class share"]
    return [
        judged("no_bn_one_class_first_batch",
               "Without BN one column is positive for almost every image: one class predicted for all (first batch)",
               "≈ all 128 images", f"top-class share {no_bn_share:.3g} (min over {len(table)} seeds "
               f"{table['no_bn top-class share'].min():.3g}); dominant fraction {m['no_bn fraction']:.3g}",
               holds(bool(no_bn_share >= 0.9), partly=bool(no_bn_share >= 0.5)), unless),
        judged("bn_spread_over_classes",
               "With BN the largest gradients are spread over the classes (first batch)", "spread over classes",
               f"top-class share {bn_share:.3g}, dominant fraction {m['bn fraction']:.3g}; "
               f"{m['bn epoch columns']:.3g} effective columns over the epoch average",
               holds(bool(bn_share <= 0.4 and m["bn epoch columns"] >= 3),
                     partly=bool(bn_share < no_bn_share - 0.2)), unless),
        judged("no_bn_same_column_over_batches",
               "Without BN the same column dominates over many batches (the blog's epoch average)",
               "(blog: one, sometimes two or three columns)",
               f"dominant fraction {m['no_bn epoch fraction']:.3g}, {m['no_bn epoch columns']:.3g} effective "
               f"columns (with BN {m['bn epoch fraction']:.3g}, {m['bn epoch columns']:.3g})",
               holds(bool(m["no_bn epoch columns"] <= 3),
                     partly=bool(m["no_bn epoch columns"] < m["bn epoch columns"])), unless),
        judged("bn_faint_gradients",
               "With BN the positive gradients are faint: no confident prediction (paper's colours)",
               "faint, well below the no-BN column's +0.004",
               f"top probability {m['bn top p']:.3g} with BN (faint: at most {FAINT_TOP_P}) vs "
               f"{m['no_bn top p']:.3g} without; dominant column gradient {m['bn column gradient']:.2g} vs "
               f"{m['no_bn column gradient']:.2g}",
               holds(bool(m["bn top p"] <= FAINT_TOP_P), partly=bool(m["bn top p"] <= m["no_bn top p"] - 0.2)),
               unless),
        judged("no_bn_column_top_of_scale",
               "Without BN the dominant column's gradients reach the top of the colour scale", "≈ +0.004 or more",
               f"{m['no_bn column gradient']:.2g} (mean over the batch; with BN {m['bn column gradient']:.2g})",
               holds(bool(m["no_bn column gradient"] >= 0.003), partly=bool(m["no_bn column gradient"] > 0)),
               unless),
    ]


# The ablation behind the "no" with BN: the same measures on other networks. ResNet-110's
# candidates (`shared.figures.candidates`: shortcut x conv init x classifier init) and ResNet-101 with
# Xavier and with torchvision's own init (Kaiming fan_out convolutions, default classifier).
COMPARED = ("bn top-class share", "bn top p", "no_bn top-class share", "no_bn top p")


def comparison_table(found: dict[str, list[dict]]) -> pd.DataFrame:
    """Per network (rows, `found`'s labels, those with runs): the number of seeds and the mean over
    them of COMPARED (`network_row`'s share of images on the most common class and mean top
    probability, with BN and without)."""
    rows = {}
    for label, runs in found.items():
        if runs:
            table = column_table(runs)
            rows[label] = {"seeds": len(runs), **table[list(COMPARED)].mean().to_dict()}
    return pd.DataFrame(rows).T


def comparison_runs(source: Source) -> dict[str, list[dict]]:
    """The stored Fig 6 runs of every ResNet-110 candidate and of ResNet-101 under Xavier and
    Kaiming fan_out (read only: the network-choice notebook and `python -m shared.experiments`
    compute them)."""
    source = source.read_only
    found = {f"resnet110 {c.name}": probe_runs(MEASUREMENT, candidate_config(MEASUREMENT, c, source.preset), source)
             for c in candidates()}
    for init in ("xavier_uniform", "kaiming_normal_fan_out"):
        cfg = MEASUREMENT.config(source.preset, arch="resnet101", init=init)
        found[f"resnet101 conv {init} | fc pytorch_default"] = probe_runs(MEASUREMENT, cfg, source)
    return found


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    cfg: LogitGradientConfig
    runs: list[dict]                  # the network's, one per seed
    compared: dict[str, list[dict]]   # `comparison_runs`


def load(source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> Runs:
    """The runs of `arch` (None: the preset's) with convolutions initialised by `init`, and the
    compared networks' (read only)."""
    cfg = MEASUREMENT.config(source.preset, arch=arch, init=init)
    return Runs(cfg, probe_runs(MEASUREMENT, cfg, source), comparison_runs(source))


@dataclass(frozen=True)
class Tables:
    columns: pd.DataFrame     # `column_table`: per seed
    summary: pd.DataFrame     # `seed_summary`: mean and std over the seeds
    compared: pd.DataFrame    # `comparison_table`


def tables(found: Runs) -> Tables:
    columns = column_table(found.runs)
    return Tables(columns, seed_summary(columns), comparison_table(found.compared))


def claims(t: Tables, preset: str) -> list[Claim]:
    return judge(t.columns, t.summary, preset)
