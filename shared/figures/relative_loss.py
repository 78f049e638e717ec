"""Fig 3's stored curves read into tables: per network, mini-batch and seed, where the relative loss
passes 10^3 and 10^6, its best step and its range up to the paper's largest step. Shared by Fig 3
(`shared.figures.fig3`), its ablation, the depth ladder and the normalisation-free networks; a run
is a stored result of the "fig3_relative_loss" experiment (its layout: `fig3`'s docstring).
"""

import numpy as np
import pandas as pd

NETWORKS = {"bn": "with BN", "no_bn": "w/o BN"}
PAPER_X_MAX = 0.1  # the largest step size of the paper's figure


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
    table = pd.DataFrame([{"seed": r["provenance"]["seed"], "network": name, "mini-batch": int(batch),
                           **probe_row(r["result"], name, batch)}
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
