"""What decides when a network without BN leaves the plateau: how far its first epoch shrank it.

The truncated schedule's depth series (`shared.figures.plateau`, notebook 01) left the plateau at
epochs 6, 2 and 3 at depths 20, 32 and 56 (seed 0): the escape epoch does not grow with depth, so
depth alone does not decide it. Every network without BN first collapses: its first updates take
the loss from the hundreds to about ln 10 by shrinking the network towards the origin
(`shared.figures.collapse`). The hypothesis tested here: near the origin of a bias-free ReLU
network each layer's gradient is proportional to the other layers' size, so the network grows back
out at a rate that rises with its size (a saddle), and a network that the collapse left smaller
takes longer to leave. "How small" is read from the health the runs record after every epoch: the
mean norm of the features that reach the classifier (the global average pool's output) on 500
test images, after epoch 1.

Claim (its rule written before the second seed's depth series was trained, which tests it): the
smaller a run's features' norm after epoch 1, the later it leaves the plateau, judged by the
concordance of the pairs of runs whose order of leaving is known. A run still on the plateau after
E epochs leaves later than every run that left by epoch E; two runs that left at the same epoch,
or that both are still on it, have no known order.

A run still on the plateau gets a forecast, an extrapolation and not a claim: the epoch its
features' norm reaches the norms at which the other runs left (their range), growing at its last
FORECAST_EPOCHS epochs' rate.
"""

import math
from itertools import combinations

import numpy as np
import pandas as pd

from ..claims import NO, NOT_JUDGED, PARTLY, YES, Claim, judged, unjudged_reason
from .plateau import DEPTHS, Tables, by_run, left_at

NORM = "features' norm"
CONCORDANT, CONCORDANT_PARTLY = 0.9, 0.7  # the claim's rule: share of comparable pairs in order
MIN_PAIRS = 6                              # ... judged over at least this many
REPLICATE_PAIRS = 3                        # ... and two seeds with this many among their own depths
FORECAST_EPOCHS = 3                        # the growth a forecast extrapolates: over the last epochs


def table(t: Tables) -> pd.DataFrame:
    """One row per run without BN (by depth, then seed): its features' norm after epoch 1, its
    lowest and the epoch of it, the epoch it left the plateau and its norm then, or, still on the
    plateau, its growth per epoch over its last FORECAST_EPOCHS epochs and the forecast epoch of
    leaving (`forecast`) against the range of norms at which the others left."""
    rows = []
    for (arch, bn, seed), run in by_run(t.curves):
        if bn:
            continue
        run = run.droplevel(["arch", "bn", "seed"])
        norm, left = run[NORM], left_at(run["test acc"])
        rows.append({"arch": arch, "seed": seed, "depth": DEPTHS[arch], "precision": run["precision"].iloc[0],
                     "epochs": len(run), "norm after epoch 1": norm.iloc[0], "lowest norm": norm.min(),
                     "lowest at epoch": int(norm.idxmin()), "left the plateau at epoch": left,
                     "norm when it left": norm[left] if left else np.nan, "norm at last epoch": norm.iloc[-1],
                     "growth per epoch": growth(norm) if left is None else np.nan})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows).sort_values(["depth", "seed"]).set_index(["arch", "seed"])
    escaped = out["norm when it left"].dropna()
    for end, bound in (("soonest", escaped.min()), ("latest", escaped.max())):
        out[f"forecast, {end}"] = [forecast(r, bound) for _, r in out.iterrows()]
    return out


def growth(norm: pd.Series) -> float:
    """The features' norm's growth factor per epoch over the last FORECAST_EPOCHS epochs (NaN
    for a shorter run)."""
    if len(norm) <= FORECAST_EPOCHS:
        return np.nan
    return float((norm.iloc[-1] / norm.iloc[-1 - FORECAST_EPOCHS]) ** (1 / FORECAST_EPOCHS))


def forecast(row: pd.Series, target: float) -> float:
    """The epoch a run still on the plateau would reach the features' norm `target`, growing at
    its `growth per epoch` from its last epoch (NaN: it left, or its norm is not growing)."""
    rate, last = row["growth per epoch"], row["epochs"]
    if not rate > 1 or not target > 0:
        return np.nan
    return float(last + max(1, math.ceil(math.log(target / row["norm at last epoch"]) / math.log(rate))))


def order(a: pd.Series, b: pd.Series) -> int | None:
    """+1 if run `a` left the plateau later than `b`, -1 if earlier, None if their order is not known."""
    ea, eb = a["left the plateau at epoch"], b["left the plateau at epoch"]
    if pd.notna(ea) and pd.notna(eb):
        return None if ea == eb else (1 if ea > eb else -1)
    if pd.isna(ea) and pd.notna(eb):
        return 1 if eb <= a["epochs"] else None
    if pd.notna(ea) and pd.isna(eb):
        return -1 if ea <= b["epochs"] else None
    return None


def concordance(rows: pd.DataFrame) -> tuple[int, int]:
    """(pairs in the hypothesis's order, pairs whose order is known): a pair is in order when the
    run with the smaller features' norm after epoch 1 left the plateau later."""
    agree = known = 0
    for (_, a), (_, b) in combinations(rows.iterrows(), 2):
        o = order(a, b)
        if o is None or a["norm after epoch 1"] == b["norm after epoch 1"]:
            continue
        known += 1
        agree += (o == 1) == (a["norm after epoch 1"] < b["norm after epoch 1"])
    return agree, known


def judge(rows: pd.DataFrame, preset: str) -> list[Claim]:
    """Rule: of the pairs of runs without BN whose order of leaving is known, at least CONCORDANT
    in the hypothesis's order: yes; CONCORDANT_PARTLY: partly; fewer: no. Judged only on a
    replication: at least MIN_PAIRS known pairs, and two seeds each with REPLICATE_PAIRS known pairs
    of its own depths (seed 0's series suggested the rule; another seed's tests it)."""
    agree, known = concordance(rows) if len(rows) else (0, 0)
    share = agree / known if known else np.nan
    verdict = YES if share >= CONCORDANT else PARTLY if share >= CONCORDANT_PARTLY else NO
    series = sum(concordance(g)[1] >= REPLICATE_PAIRS for _, g in rows.groupby(level="seed")) if len(rows) else 0
    unless = unjudged_reason(preset) or (
        f"needs {MIN_PAIRS} pairs of runs whose order of leaving is known, has {known}" if known < MIN_PAIRS else
        f"needs two seeds with {REPLICATE_PAIRS} pairs of known order among their own depths each (a "
        f"replication), has {series}" if series < 2
        else None)
    return [judged("escape_follows_collapse",
                   "Without BN at 1e-4, the smaller a network's features after its first epoch, the later it "
                   "leaves the plateau (across depths and seeds)",
                   "(not in the paper: our test of why the escape does not follow depth)",
                   f"{agree} of {known} pairs in order" if known else "-", verdict, unless)]


def findings(rows: pd.DataFrame) -> list[str]:
    """The table in sentences: the order per seed, its concordance, and each forecast."""
    if not len(rows):
        return ["No run without BN of the truncated schedule is stored yet."]
    lines = []
    for seed, group in rows.groupby(level="seed"):
        agree, known = concordance(group)
        runs = group.sort_values("norm after epoch 1")
        parts = [f"ResNet-{r.depth} {r['norm after epoch 1']:.2g} ("
                 + (f"left at epoch {int(r['left the plateau at epoch'])})" if pd.notna(r["left the plateau at epoch"])
                    else f"not within {int(r.epochs)} epoch{'s' * (r.epochs != 1)})") for _, r in runs.iterrows()]
        lines.append(f"Seed {seed}, features' norm after epoch 1, smallest first: {', '.join(parts)}; "
                     f"{agree} of {known} pairs whose order is known in the hypothesis's order.")
    agree, known = concordance(rows)
    lines.append(f"All seeds together: {agree} of {known} pairs in order.")
    for (arch, seed), r in rows[rows["left the plateau at epoch"].isna()].iterrows():
        if pd.notna(r["forecast, soonest"]):
            lines.append(f"{arch} seed {seed}, still on the plateau after {int(r.epochs)} epochs: its features' norm "
                         f"is {r['norm at last epoch']:.3g} (lowest {r['lowest norm']:.2g} at epoch {int(r['lowest at epoch'])}) "
                         f"and grew {r['growth per epoch']:.2f}x an epoch over its last {FORECAST_EPOCHS}; at that rate it "
                         f"reaches the norms at which the others left ({rows['norm when it left'].min():.3g}-"
                         f"{rows['norm when it left'].max():.3g}) at epochs {int(r['forecast, soonest'])}-"
                         f"{int(r['forecast, latest'])}.")
    return lines


def plot(axes, rows: pd.DataFrame, t: Tables) -> None:
    """Left: the features' norm per epoch of each run without BN (log scale; a dot where it left
    the plateau; grey band: the norms at which the runs left). Right: the escape epoch against the
    features' norm after epoch 1, a run still on the plateau as a triangle at its epochs and a
    dotted line over its forecast. A colour per depth; seed 0 solid and filled, the others dashed
    and hollow."""
    trace, scatter = axes
    depths = sorted(rows["depth"].unique()) if len(rows) else []
    colour = {d: f"C{i}" for i, d in enumerate(depths)}
    for (arch, seed), r in rows.iterrows():
        run = t.curves.loc[(arch, False, seed)]
        style = dict(color=colour[r.depth], ls="-" if seed == 0 else "--")
        point = dict(color=style["color"], mfc=style["color"] if seed == 0 else "white")  # seed 0 filled
        trace.plot(run.index, run[NORM], label=f"ResNet-{r.depth}, seed {seed}", **style)
        left = r["left the plateau at epoch"]
        if pd.notna(left):
            trace.plot(left, run.loc[left, NORM], "o", **point)
            scatter.plot(r["norm after epoch 1"], left, "o", **point)
        else:
            scatter.plot(r["norm after epoch 1"], r.epochs, "^", **point)
            scatter.vlines(r["norm after epoch 1"], r["forecast, soonest"], r["forecast, latest"], color=style["color"],
                           ls=":")  # NaN where there is no forecast: nothing drawn
    escaped = rows["norm when it left"].dropna() if len(rows) else pd.Series(dtype=float)
    if len(escaped):
        trace.axhspan(escaped.min(), escaped.max(), color="grey", alpha=0.2, label="norms at which runs left")
    trace.set(xlabel="epoch (constant lr 1e-4)", ylabel="features' norm (classifier input)", yscale="log")
    scatter.set(xlabel="features' norm after epoch 1", ylabel="epoch it left the plateau\n(▲: not yet; dotted: forecast)", xscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    if trace.get_legend_handles_labels()[0]:
        trace.legend(fontsize=8)
