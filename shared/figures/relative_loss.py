"""Fig 3's stored curves read into tables and plots: per network, mini-batch and seed, where the relative loss
passes 10^3 and 10^6, its best step and its range up to the paper's largest step. Shared by Fig 3
(`shared.figures.fig3`), its ablation, the depth ladder and the normalisation-free networks; a run
is a stored result of the "fig3_relative_loss" experiment (its layout: `fig3`'s docstring).
"""

import numpy as np
import pandas as pd

NETWORKS = {"bn": "with BN", "no_bn": "w/o BN"}
PAPER_X_MAX = 0.1  # the largest step size of the paper's figure
PAPER_Y_MIN = 1e-2  # the bottom of the paper's axis
Y_MAX = 1e8  # the top of ours


def batches(cfg) -> list[str]:
    """The probed mini-batches of a configuration, as the stored results name them."""
    return [str(b) for b in cfg.probe_batches]


def curve(result: dict, name: str, batch: str) -> np.ndarray:
    """The relative loss for each step size; non-finite values (stored as None) become NaN."""
    return np.array(result[name]["batches"][batch]["relative_loss"], dtype=float)


def first_above(result: dict, name: str, batch: str, threshold: float) -> float:
    """The smallest step size whose relative loss exceeds `threshold` (a non-finite loss counts
    as exceeding), or inf if none does."""
    ratios = curve(result, name, batch)
    above = np.isnan(ratios) | (ratios > threshold)
    return np.array(result["sizes"])[above.argmax()] if above.any() else np.inf


def probe_row(result: dict, name: str, batch: str) -> dict:
    """One network and mini-batch of a run: the training rate, the first step sizes past 10^3 and
    10^6, the best relative loss and its step size (NaN where no loss is finite), and the largest
    (inf if any is not finite) and smallest relative loss up to s = 0.1."""
    probe = result[name]["batches"][batch]
    ratios = curve(result, name, batch)
    upto = np.array(result["sizes"]) <= PAPER_X_MAX * (1 + 1e-9)
    best = probe["best_relative_loss"]  # None: no finite loss at any step (nor a best step)
    return {"lr": result[name]["lr"],
            "first s > 1e3": first_above(result, name, batch, 1e3),
            "first s > 1e6": first_above(result, name, batch, 1e6),
            "best relative loss": best, "best s": np.nan if best is None else probe["best_size"],
            "max ratio, s ≤ 0.1": np.inf if np.isnan(ratios[upto]).any() else ratios[upto].max(),
            "min ratio, s ≤ 0.1": np.fmin.reduce(ratios[upto])}


def probe_table(runs: list[dict], batches: list[str]) -> pd.DataFrame:
    """`probe_row` for every run, network and mini-batch, indexed by network, mini-batch, seed."""
    table = pd.DataFrame([{"seed": r.provenance["seed"], "network": name, "mini-batch": int(batch),
                           **probe_row(r.result, name, batch)}
                          for r in runs for name in NETWORKS for batch in batches])
    return table.set_index(["network", "mini-batch", "seed"]).sort_index()


def batch_means(table: pd.DataFrame) -> pd.DataFrame:
    """The mean over seeds of every column, per network and mini-batch."""
    return table.groupby(level=["network", "mini-batch"]).mean()


def median_table(found: dict[str, list[dict]], batches: list[str], columns: list[str], level: str) -> pd.DataFrame:
    """Per entry of `found` with runs (index level `level`), network and mini-batch: the median
    over seeds of `probe_table`'s `columns`, and the number of seeds."""
    frames = []
    for label, runs in found.items():
        if runs:
            grouped = probe_table(runs, batches).groupby(level=["network", "mini-batch"])
            frames.append(grouped[columns].median().assign(seeds=grouped.size(), **{level: label}))
    return pd.concat(frames).reset_index().set_index([level, "network", "mini-batch"])


# ---- plots (Fig 3 and its overlay) ----

def y_floor(results: list[dict], batches: list[str]) -> dict[str, float]:
    """Per network, half the smallest relative loss over every run and mini-batch: the lower y
    limit where our curves dip below the paper's 1e-2."""
    return {name: 0.5 * np.fmin.reduce([curve(r, name, b) for r in results for b in batches], None)
            for name in NETWORKS}


def plot_relative_loss(axes, shown: dict, others: list[dict], batches: list[str],
                       floor: dict[str, float]) -> None:
    """A row per network and a column per mini-batch: the shown run's curve (thick), the other
    runs' (thin), the training rate (dotted) and, without BN, the threshold 10^3 (dashed)."""
    sizes = np.array(shown["sizes"])
    for row, (name, label) in enumerate(NETWORKS.items()):
        for col, batch in enumerate(batches):
            ax = axes[row, col]
            for result in others:
                ax.plot(sizes, curve(result, name, batch), color="C0", lw=0.8, alpha=0.4)
            ax.plot(sizes, curve(shown, name, batch), color="C0", lw=1.6)
            ax.axvline(shown[name]["lr"], color="0.5", ls=":", lw=1)
            ax.set(xscale="log", yscale="log", xlim=(sizes[0], sizes[-1]))
            if name == "no_bn":
                ax.axhline(1e3, color="C3", ls="--", lw=0.8)
                ax.set_ylim(min(PAPER_Y_MIN, floor[name]), Y_MAX)
                ax.set_xlabel("step size")
            else:
                ax.set_title(f"mini-batch {batch}", fontsize=13)
            if col == 0:
                ax.set_ylabel("relative loss")
            if col == len(batches) - 1:
                ax.text(1.05, 0.5, label, transform=ax.transAxes, rotation=90, va="center", fontsize=13)


def plot_overlay(axes, shown: dict, results: list[dict], batches: list[str],
                 floor: dict[str, float]) -> None:
    """A panel per network, a line per mini-batch (the shown run) and the range over `results`
    as a band; the training rate dotted, 10^3 dashed."""
    sizes = np.array(shown["sizes"])
    for ax, (name, label) in zip(axes, NETWORKS.items()):
        for i, batch in enumerate(batches):
            stack = np.array([curve(r, name, batch) for r in results])
            low, high = np.fmin.reduce(stack, 0), np.fmax.reduce(stack, 0)  # NaN-ignoring, no warning
            ax.fill_between(sizes, low, high, color=f"C{i}", alpha=0.2, lw=0)
            ax.plot(sizes, curve(shown, name, batch), color=f"C{i}", label=f"mini-batch {batch}")
        ax.axvline(shown[name]["lr"], color="0.5", ls=":", lw=1)
        ax.axhline(1e3, color="C3", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log", xlim=(sizes[0], sizes[-1]),
               ylim=(min(PAPER_Y_MIN, *floor.values()), Y_MAX), xlabel="step size", title=label)
        ax.legend(loc="upper left")
    axes[0].set_ylabel("relative loss")
