"""The learning-rate sweep (notebook `09_lr_sweep`): the claim the paper makes in words beside
Fig 1, that with BN ResNet-110 trains at rates up to 0.1 while without BN only about 1e-4 trains and
larger rates diverge ("not shown"); final test accuracy against the rate, with and without BN. Runs are judged by
Fig 1's rules (shared.figures.fig1: diverged, failed to learn, trained).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..claims import NO, PARTLY, Claim, at_least, judged, unjudged_reason, within_range
from ..config import TRAINING_EXPERIMENT, TrainConfig
from ..grids import sweep_grid
from ..compute import config_runs
from ..train import run_grid
from .divergence import CHANCE, trained
from .protocol import Source


def outcomes(found: list[dict]) -> dict:
    """The stored runs of one setting: how many seeds, diverged, failed to learn and trained, and
    the final test accuracy of the completed ones (mean and std; NaN if none completed)."""
    results = [r.result for r in found]
    done = [r["metrics"][-1]["test_acc"] for r in results if r["status"] == "completed"]
    return {"seeds": len(results), "diverged": len(results) - len(done),
            "failed to learn": sum(r["status"] == "completed" and not trained(r) for r in results),
            "trained": sum(trained(r) for r in results),
            "test acc": np.mean(done) if done else np.nan, "test acc std": np.std(done) if done else np.nan}


def sweep_table(runs: list[tuple[TrainConfig, list[dict]]]) -> pd.DataFrame:
    """Per (BN, rate): seeds, diverged, failed to learn, trained, and final test accuracy."""
    return pd.DataFrame([{"bn": cfg.bn, "lr": cfg.lr, **outcomes(found)} for cfg, found in runs])


def largest_training_rate(sweep: pd.DataFrame, bn: bool) -> float | None:
    """The largest rate at which every seed trained."""
    rows = sweep[(sweep.bn == bn) & (sweep.trained == sweep.seeds) & (sweep.seeds > 0)]
    return float(rows.lr.max()) if len(rows) else None


def largest_surviving_rate(sweep: pd.DataFrame, bn: bool) -> float | None:
    """The largest rate below which no run diverges (every smaller rate and it: no seed diverged,
    whether or not it learned)."""
    rows = sweep[(sweep.bn == bn) & (sweep.seeds > 0)].sort_values("lr")
    safe = (rows.diverged == 0).cumprod().astype(bool)
    return float(rows.lr[safe].max()) if safe.any() else None


# Without BN, "about 1e-4" (the boundary of divergence, and the largest rate that trains): the
# half-decade around it (3e-5..3.2e-4); the divergence boundary holds in part a decade further up (to
# 3.2e-3) if no run there trains (each diverges or fails to learn)
NO_BN_BOUNDARY = (3e-5, 3.2e-4)
NO_BN_BOUNDARY_PARTLY = (3e-5, 3.2e-3)


def judge(sweep: pd.DataFrame, preset: str) -> list[Claim]:
    """The sweep's claims. Without BN, rates above about 1e-4 diverge (the largest rate with no
    diverged run within NO_BN_BOUNDARY; partly within NO_BN_BOUNDARY_PARTLY if no run above
    NO_BN_BOUNDARY trains), judged on any preset; without BN the largest rate that trains is
    about 1e-4 (within NO_BN_BOUNDARY), which needs the full schedule (on a short one even BN
    learns slowly at 1e-4); with BN rates at least 100 times larger train: BN's largest rate that
    trains against the largest at which the network without BN does not diverge. A claim is not
    judged while a run it rests on is missing: each rests on every run without BN, and the third
    also on BN's runs above BN's largest rate that trains (no run below it can change that rate)."""
    no_bn, with_bn = largest_training_rate(sweep, False), largest_training_rate(sweep, True)
    survives = largest_surviving_rate(sweep, False)
    plain, bn = sweep[~sweep.bn], sweep[sweep.bn]

    def missing(rows: pd.DataFrame) -> str | None:
        n = int((rows.seeds == 0).sum())
        rests = f"{n} of the {len(rows)} runs it rests on not yet trained" if n else None
        return unjudged_reason(preset) or rests

    unless = missing(plain)
    unless_bn = missing(pd.concat([plain, bn if with_bn is None else bn[bn.lr > with_bn]]))
    full = f"{preset} preset: rate 1e-4 needs the full schedule" if preset != "paper" else None
    above = plain[plain.lr > (survives or 0)]
    none_train_above = not plain[plain.lr > NO_BN_BOUNDARY[1]].trained.any()
    at = plain[plain.lr == survives]
    fails = survives is not None and int(at["failed to learn"].sum()) == int(at.seeds.sum())

    def describe(rate):
        return f"largest rate that trains: {rate:g}" if rate else "no rate trains"

    return [
        judged("no_bn_rates_above_1e_4_diverge",
               "Without BN, rates above about 1e-4 diverge", "larger rates diverge (not shown)",
               (f"largest rate with no diverged run: {survives:g}" if survives else "every rate diverges")
               + (" (it fails to learn)" if fails else "")
               + f"; above it {int(above.diverged.sum())} of {int(above.seeds.sum())} runs diverge",
               NO if survives is None else
               within_range(survives, *NO_BN_BOUNDARY, partly=NO_BN_BOUNDARY_PARTLY if none_train_above else None),
               unless=unless),
        judged("no_bn_largest_rate_1e_4",
               "Without BN the largest rate that trains is about 1e-4", "1e-4", describe(no_bn),
               PARTLY if no_bn is None else within_range(no_bn, *NO_BN_BOUNDARY), unless=unless or full),
        judged("bn_larger_rates_train", "With BN much larger rates train", "0.1 trains (1e-4 without BN)",
               f"{describe(with_bn)}; without BN no run diverges up to {survives:g}" if survives
               else describe(with_bn),
               PARTLY if with_bn is None or survives is None else at_least(with_bn, 100 * survives),
               unless=unless_bn),
    ]


def plot_sweep(ax, sweep: pd.DataFrame) -> None:
    """Final test accuracy against the rate, with and without BN; diverged runs as crosses at 0."""
    for bn, colour in ((True, "C0"), (False, "C3")):
        rows = sweep[sweep.bn == bn]
        label = "with BN" if bn else "without BN"
        ax.errorbar(rows.lr, rows["test acc"], yerr=rows["test acc std"], color=colour, marker="o", label=label)
        failed = rows[rows.diverged > 0]
        if len(failed):
            ax.scatter(failed.lr, np.zeros(len(failed)), marker="x", s=60, color=colour,
                       label=f"{label}: diverged (drawn at 0)")
    ax.axhline(CHANCE, color="grey", ls=":", lw=1, label="chance")
    ax.set(xscale="log", xlabel="learning rate", ylabel="final test accuracy", ylim=(-0.03, 1))



# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    runs: list[tuple[TrainConfig, list[dict]]]  # each rate's config (BN and not), with its runs


def load(source: Source, rates_per_decade: int = 2, epochs: int | None = None, together: int = 1) -> Runs:
    """The runs of the preset's sweep (`sweep_grid`: `rates_per_decade`, the schedule cut to
    `epochs`, None: the preset's sweep budget), after training `source.compute`'s missing ones,
    `together` at a time."""
    grid = sweep_grid(source.preset, rates_per_decade, epochs)
    if source.compute is not None:
        run_grid(grid, source.compute, TRAINING_EXPERIMENT, source.context, together)
    return Runs([(cfg, config_runs(TRAINING_EXPERIMENT, cfg, seeds=source.seeds)) for cfg in grid])


@dataclass(frozen=True)
class Tables:
    sweep: pd.DataFrame  # `sweep_table`: per (BN, rate)


def tables(found: Runs) -> Tables:
    return Tables(sweep_table(found.runs))


def claims(t: Tables, preset: str) -> list[Claim]:
    return judge(t.sweep, preset)
