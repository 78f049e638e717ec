"""Without BN at 1e-4: a plateau the paper's long schedule passes through, or a dead end?

The paper's Fig 1 trains ResNet-110 without BN at lr 1e-4 to 82.0 % test accuracy, beside BN's
81.3 % at the same rate. Fig 1's compressed `cpu` schedule (15 epochs, the rate divided by 10 after
7) leaves it near the loss of a constant guess, ln 10 = 2.3026. The paper's run spends its first
half at 1e-4: under its doubling rule about 1,200 epochs before its first drop; ours had 7.

So this module reads the start of the paper's own protocol, truncated instead of compressed
(`shared.grids.start_grid`, notebook 01): a constant 1e-4 on the full data, the network's health
after every epoch, each run extended by continuing its stored shorter self. A run *leaves the
plateau* at the first epoch whose test accuracy reaches ESCAPE_ACC. The depth series (ResNet-20,
32, 56 without BN) asks which depths collapse at all and when each leaves; where ResNet-110 has not
left within its budget, the escape epoch is fitted against depth (log-log, `escape_fit`).
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..claims import NO, NOT_JUDGED, PARTLY, YES, Claim, judged, unjudged_reason
from ..config import PRECISIONS, TRAINING_EXPERIMENT
from ..grids import START_LR, START_RUNS, start_config
from ..compute import config_runs
from .protocol import Source

ESCAPE_ACC = 0.20          # a run has left the plateau at its first epoch with this test accuracy
PLATEAU_LOSS = math.log(10)  # the loss of a uniform guess over 10 classes
LONGEST = 400              # the longest run looked for in the store, in epochs
TRACK_GAP, TRACK_GAP_PARTLY = 0.05, 0.10  # "track each other": mean |test acc gap| at equal epochs
TRACK_EPOCHS = 5           # ... over at least this many epochs after both have left the plateau
TREND_EPOCHS = 5           # a run still on the plateau: how its test loss fell over its last epochs
BUDGET = {(arch, bn): epochs for arch, bn, epochs in START_RUNS}  # each run's planned length
DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}


def stored_runs(arch: str, bn: bool, source: Source) -> list[dict]:
    """Per seed of `source` and precision, the longest stored run of the start grid
    (`start_config`) of `arch`: a longer run holds every epoch of the shorter ones. Each machine
    starts a run in its faster precision (bf16 pays on some CPUs, costs on others), and a run keeps
    its precision when extended, so a network and seed may have runs in more than one."""
    found: dict[tuple[int, str], dict] = {}
    for epochs in range(LONGEST, 0, -1):
        for precision in PRECISIONS:
            cfg = start_config(arch, bn, epochs, source.preset, precision=precision)
            for run in config_runs(TRAINING_EXPERIMENT, cfg, source.seeds):
                found.setdefault((run.seed, precision), run)
    return [found[key] for key in sorted(found, key=lambda k: (k[0], PRECISIONS.index(k[1])))]


def longest(runs: list[dict]) -> list[dict]:
    """Of `stored_runs`, each seed's longest run, in whichever precision (on equal lengths, the
    first of PRECISIONS)."""
    best: dict[int, dict] = {}
    for run in runs:
        if run.seed not in best or len(run.result["metrics"]) > len(best[run.seed].result["metrics"]):
            best[run.seed] = run
    return [best[seed] for seed in sorted(best)]


def escape_epoch(metrics: list[dict]) -> int | None:
    """The first epoch (1-based) whose test accuracy reaches ESCAPE_ACC, or None."""
    return left_at({m["epoch"]: m["test_acc"] or 0 for m in metrics})


def left_at(test_acc) -> int | None:
    """The first epoch of `test_acc` ({epoch: accuracy}, or a Series by epoch) at ESCAPE_ACC, or None."""
    return next((int(e) for e, a in test_acc.items() if a >= ESCAPE_ACC), None)


def curves(runs: list[dict]) -> pd.DataFrame:
    """One row per (arch, BN, seed, epoch): losses, accuracies and the network's health."""
    rows = []
    for run in runs:
        cfg, seed = run.provenance["config"], run.provenance["seed"]
        for m in run.result["metrics"]:
            health = m.get("health", {})
            rows.append({"arch": cfg["arch"], "bn": cfg["bn"], "seed": seed, "epoch": m["epoch"], "precision": cfg["precision"],
                         "train loss": m["train_loss"], "test loss": m["test_loss"], "test acc": m["test_acc"],
                         "logit spread": health.get("logit_spread", {}).get("across_images", np.nan),
                         "features' norm": health.get("features", {}).get("norm", np.nan),
                         "features' input share": health.get("features", {}).get("input_share", np.nan),
                         "gradient's norm": health.get("grad_norm", np.nan),
                         "dead ReLUs, stage 3": health.get("dead_relu", {}).get("stage3", np.nan)})
    return pd.DataFrame(rows).set_index(["arch", "bn", "seed", "epoch"]).sort_index() if rows else pd.DataFrame()


def summary(runs: list[dict]) -> pd.DataFrame:
    """One row per run: its epochs (of its budget), where it left the plateau, its last epoch's
    test loss and accuracy, and its lowest test loss."""
    rows = []
    for run in runs:
        cfg, metrics = run.provenance["config"], run.result["metrics"]
        rows.append({"arch": cfg["arch"], "bn": cfg["bn"], "seed": run.provenance["seed"],
                     "precision": cfg["precision"], "epochs": len(metrics), "budget": BUDGET.get((cfg["arch"], cfg["bn"])),
                     "left the plateau at epoch": escape_epoch(metrics),
                     "test loss": metrics[-1]["test_loss"], "test acc": metrics[-1]["test_acc"],
                     "lowest test loss": min(m["test_loss"] for m in metrics),
                     "hours": run.provenance["duration_s"] / 3600})
    return pd.DataFrame(rows).set_index(["arch", "bn", "seed"]) if rows else pd.DataFrame()


def escape_fit(table: pd.DataFrame) -> dict | None:
    """The escape epoch of the networks without BN against depth, fitted as a power law
    (log epoch = a + b log depth) over every seed that left the plateau, and ResNet-110's epoch
    predicted from it; the range is the predictions of the fits leaving out one depth at a time
    (None with two depths: no such fit). None with fewer than two depths that left."""
    rows = table.xs(False, level="bn").dropna(subset=["left the plateau at epoch"])
    rows = rows[rows.index.get_level_values("arch") != "resnet110"]
    depths = np.array([DEPTHS[a] for a in rows.index.get_level_values("arch")], dtype=float)
    epochs = rows["left the plateau at epoch"].to_numpy(dtype=float)
    if len(set(depths)) < 2:
        return None

    def predict(d, e):
        b, a = np.polyfit(np.log(d), np.log(e), 1)
        return float(np.exp(a + b * math.log(110))), float(b)

    at_110, exponent = predict(depths, epochs)
    others = [predict(depths[depths != d], epochs[depths != d]) for d in set(depths)
              if len(set(depths[depths != d])) >= 2]
    low, high = (min(p for p, _ in others), max(p for p, _ in others)) if others else (None, None)
    return {"exponent": exponent, "resnet110": at_110, "low": low, "high": high, "depths": sorted(set(depths))}


def track_gap(curve: pd.DataFrame, seed: int) -> tuple[float, int] | None:
    """ResNet-110 at 1e-4 with and without BN: the mean |test accuracy gap| over the epochs that
    both ran after both left the plateau (seed `seed`), and how many; None if there are none."""
    try:
        bn = curve.loc[("resnet110", True, seed), "test acc"]
        plain = curve.loc[("resnet110", False, seed), "test acc"]
    except KeyError:
        return None
    left = [left_at(bn), left_at(plain)]
    if None in left:
        return None
    common = [e for e in bn.index.intersection(plain.index) if e >= max(left)]
    return (float(np.mean([abs(bn[e] - plain[e]) for e in common])), len(common)) if common else None


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    runs: list[dict]  # the longest stored run of every START_RUNS network and seed
    others: list[dict] = field(default_factory=list)  # shorter ones of the same, in another precision


@dataclass(frozen=True)
class Tables:
    summary: pd.DataFrame  # per run: epochs, escape epoch, last test loss and accuracy
    curves: pd.DataFrame   # per run and epoch: losses, accuracies, health
    fit: dict | None       # the escape epoch against depth, without BN (`escape_fit`)
    precisions: pd.DataFrame = field(default_factory=pd.DataFrame)  # `precision_table`


def load(source: Source) -> Runs:
    """The longest stored start-grid run of every network of START_RUNS for `source`'s seeds
    (read only: `python -m shared.train start` computes them, resumable and extendable)."""
    runs, others = [], []
    for arch, bn, _ in START_RUNS:
        stored = stored_runs(arch, bn, source)
        runs += longest(stored)
        others += [r for r in stored if not any(r is kept for kept in runs)]
    return Runs(runs, others)


def precision_table(runs: list[dict]) -> pd.DataFrame:
    """The precision A/B of the escape: per network and seed stored in more than one precision,
    each precision's run: the epoch it left the plateau (NaN: not within its epochs), its epochs,
    and its test accuracy at the last epoch that all of them ran ("common epoch")."""
    curve = curves(runs)
    rows = []
    for _, group in curve.groupby(level=["arch", "bn", "seed"]) if len(curve) else []:
        by_precision = {p: g.droplevel(["arch", "bn", "seed"])["test acc"] for p, g in group.groupby("precision")}
        common = min(len(acc) for acc in by_precision.values())
        rows += [{"arch": group.index[0][0], "bn": group.index[0][1], "seed": group.index[0][2], "precision": p,
                  "left the plateau at epoch": left_at(acc), "epochs": len(acc), "common epoch": common,
                  "test acc then": acc[common]} for p, acc in by_precision.items() if len(by_precision) > 1]
    return pd.DataFrame(rows).set_index(["arch", "bn", "seed", "precision"]) if rows else pd.DataFrame()


def tables(found: Runs) -> Tables:
    table = summary(found.runs)
    return Tables(table, curves(found.runs), escape_fit(table) if len(table) else None,
                  precision_table(found.runs + found.others))


def judge(t: Tables, preset: str) -> list[Claim]:
    """Rules: ResNet-110 without BN at 1e-4 leaves the plateau (test accuracy >= ESCAPE_ACC) in
    every seed stored: yes; a seed that ran its whole budget (60 epochs) without: no; a seed still
    short of its budget: not judged. BN and no-BN track each other once both learn: the mean
    |test accuracy gap| at equal epochs after both left the plateau, over at least TRACK_EPOCHS
    epochs, within TRACK_GAP (yes) or TRACK_GAP_PARTLY (partly); fewer epochs: not judged."""
    plain = t.summary.xs(("resnet110", False), level=["arch", "bn"]) if len(t.summary) else pd.DataFrame()
    unless = unjudged_reason(preset) or (None if len(plain) else "no run stored yet")
    left = plain["left the plateau at epoch"] if len(plain) else pd.Series(dtype=float)
    short = plain[left.isna() & (plain["epochs"] < plain["budget"])] if len(plain) else plain
    if len(plain) and left.notna().all():
        verdict, ours = YES, ", ".join(f"seed {s}: epoch {int(e)}" for s, e in left.items())
    elif len(short):
        verdict, ours = NOT_JUDGED, ", ".join(
            f"seed {s}: not yet, {int(r.epochs)} of {int(r.budget)} epochs (test acc {r['test acc']:.1%}, "
            f"test loss {r['test loss']:.4f})" for s, r in plain.iterrows())
        unless = unless or f"{len(short)} run(s) short of their {int(short['budget'].max())}-epoch budget"
    else:
        verdict, ours = NO, ", ".join(f"seed {s}: not within {int(r.epochs)} epochs (test acc {r['test acc']:.1%})"
                                      for s, r in plain.iterrows())
    gaps = {s: track_gap(t.curves, s) for s in plain.index} if len(plain) else {}
    judged_gaps = {s: g for s, g in gaps.items() if g and g[1] >= TRACK_EPOCHS}
    mean_gap = float(np.mean([g for g, _ in judged_gaps.values()])) if judged_gaps else None
    track = (NOT_JUDGED if mean_gap is None else
             YES if mean_gap <= TRACK_GAP else PARTLY if mean_gap <= TRACK_GAP_PARTLY else NO)
    return [
        judged("no_bn_leaves_plateau",
               f"Without BN at {START_LR:g} ResNet-110 leaves the constant-guess plateau (test accuracy "
               f">= {ESCAPE_ACC:.0%}) within the paper's first phase",
               "82.0 % after its schedule; about 1,200 epochs at 1e-4 before its first drop", ours or "-",
               verdict, unless=unless if verdict == NOT_JUDGED or unless else None),
        judged("bn_no_bn_track",
               f"Once both learn, BN and no-BN at {START_LR:g} track each other at equal epochs",
               "81.3 % and 82.0 % (BN, no BN) at the end",
               f"mean |test accuracy gap| {mean_gap:.1%} over {sum(n for _, n in judged_gaps.values())} epochs"
               if mean_gap is not None else "no-BN has not left the plateau yet",
               track, unless=unjudged_reason(preset) or (None if mean_gap is not None else
                                                      f"needs {TRACK_EPOCHS} epochs after both left the plateau")),
    ]


def claims(t: Tables, preset: str) -> list[Claim]:
    return judge(t, preset)


def findings(t: Tables) -> list[str]:
    """What the runs show, in sentences with their numbers (the notebook's "What we found")."""
    if not len(t.summary):
        return ["No run of the truncated schedule is stored yet (`python -m shared.train start`)."]
    lines, curves = [], t.curves
    share = "features' input share"
    for (arch, bn, seed), r in t.summary.iterrows():
        run = curves.loc[(arch, bn, seed)]
        first, last = run.iloc[0], run.iloc[-1]
        left = r["left the plateau at epoch"]
        drops = -run["test loss"].diff().iloc[-TREND_EPOCHS:]
        trend = (f" (the test loss fell by {', '.join(f'{d:.4f}' for d in drops)} in its last {len(drops)} epochs"
                 f"{': faster each epoch' if drops.is_monotonic_increasing else ''})" if len(run) > TREND_EPOCHS else "")
        escaped = (f"left the plateau at epoch {int(left)}." if pd.notna(left)
                   else f"has not left the plateau{trend}.")
        lines.append(
            f"{arch} {'with' if bn else 'without'} BN, seed {seed} ({r.precision}), {int(r.epochs)} of {int(r.budget)} epochs "
            f"({r.hours:.1f} h): test loss {first['test loss']:.4f} after epoch 1, {last['test loss']:.4f} after "
            f"epoch {int(r.epochs)} (ln 10 = {PLATEAU_LOSS:.4f}); test accuracy {last['test acc']:.1%}; {escaped} "
            f"Features' input share {first[share]:.3f} -> {last[share]:.3f}, logits' spread "
            f"{first['logit spread']:.3f} -> {last['logit spread']:.3f}.")
    for (arch, bn, seed), group in t.precisions.groupby(level=["arch", "bn", "seed"]) if len(t.precisions) else []:
        runs = group.droplevel(["arch", "bn", "seed"])
        parts = [f"at epoch {int(r['left the plateau at epoch'])} in {p}" if pd.notna(r["left the plateau at epoch"])
                 else f"not within {int(r.epochs)} epoch{'s' * (r.epochs != 1)} in {p}" for p, r in runs.iterrows()]
        accs = " and ".join(f"{a:.2%}" for a in runs["test acc then"])
        lines.append(f"Precision and the escape, {arch} {'with' if bn else 'without'} BN, seed {seed}: it left the "
                     f"plateau {' and '.join(parts)}; test accuracy after epoch {int(runs['common epoch'].iloc[0])} {accs}.")
    if t.fit:
        spread = (f"leave-one-out range {t.fit['low']:.0f}-{t.fit['high']:.0f}" if t.fit["low"] is not None
                  else "no range: two depths, one line through them")
        lines.append(f"Escape epoch against depth without BN (fit over depths {', '.join(f'{d:g}' for d in t.fit['depths'])}): "
                     f"epoch ~ depth^{t.fit['exponent']:.2f}, so ResNet-110 would leave at about epoch "
                     f"{t.fit['resnet110']:.0f} ({spread})" + (": but the escape epoch does not grow with depth over "
                     "these depths, so the power law describes none of them" if t.fit["exponent"] <= 0 else "") + ".")
        latest = t.fit["resnet110"] if t.fit["high"] is None else t.fit["high"]
        runs = t.summary.reset_index()
        past = runs[(runs["arch"] == "resnet110") & ~runs["bn"] & runs["left the plateau at epoch"].isna()
                    & (runs["epochs"] > latest)]
        shallow = runs.loc[(runs["arch"] != "resnet110") & ~runs["bn"], "left the plateau at epoch"].max()
        if len(past):
            lines.append("ResNet-110 without BN has run without leaving for "
                         + ", ".join(f"{int(n)} epochs (seed {s})" for s, n in zip(past["seed"], past["epochs"]))
                         + ": later than this fit predicts"
                         + (f", and than any shallower network left (the latest at epoch {int(shallow)})."
                            if past["epochs"].max() > shallow else "."))
    return lines


def brief(source: Source) -> str:
    """The truncated schedule's state in one paragraph, for the notebooks that its answer bears on
    (the sweep's and the network choice's runs end on the same plateau): per network and seed, by
    depth, where it left the plateau, or how far it has come without."""
    table = summary(load(source).runs)
    if not len(table):
        return "No run of the truncated schedule is stored yet (notebook 01, `python -m shared.train start`)."
    rows = table.reset_index().assign(depth=lambda t: t["arch"].map(DEPTHS)).sort_values(["bn", "depth", "seed"])
    parts = []
    for _, r in rows.iterrows():
        left, acc, epochs = r["left the plateau at epoch"], r["test acc"], int(r["epochs"])
        where = (f"left the plateau at epoch {int(left)}, {acc:.1%} after {epochs} epochs" if pd.notna(left)
                 else f"not yet after {epochs} of {int(r['budget'])} epochs ({acc:.1%}, test loss {r['test loss']:.4f})")
        parts.append(f"{r['arch']} {'with' if r['bn'] else 'without'} BN, seed {r['seed']}: {where}")
    return (f"The truncated schedule so far (a constant {START_LR:g} on the full data; a run leaves the "
            f"plateau at test accuracy >= {ESCAPE_ACC:.0%}; ln 10 = {PLATEAU_LOSS:.4f}): " + "; ".join(parts) + ".")


def plot(axes, t: Tables) -> None:
    """Left: test accuracy per epoch of ResNet-110 at 1e-4 with and without BN (the escape marked);
    right: test loss, with the constant guess's ln 10."""
    acc, loss = axes
    for (arch, bn, seed), run in by_run(t.curves):
        if arch != "resnet110":
            continue
        run = run.droplevel(["arch", "bn", "seed"])
        style = dict(color="C0" if bn else "C3", ls="-" if seed == 0 else "--", marker="o" if len(run) < 3 else None,
                     label=f"{'with' if bn else 'without'} BN, seed {seed} ({run['precision'].iloc[0]})")
        acc.plot(run.index, run["test acc"], **style)
        loss.plot(run.index, run["test loss"], **style)
        left = left_at(run["test acc"])
        if left is not None:
            acc.axvline(left, color=style["color"], lw=0.8, ls=":")
    acc.axhline(ESCAPE_ACC, color="grey", lw=0.8, ls=":", label=f"left the plateau ({ESCAPE_ACC:.0%})")
    acc.set(xlabel="epoch (constant lr 1e-4)", ylabel="test accuracy", ylim=(0, 1))
    loss.axhline(PLATEAU_LOSS, color="k", lw=0.8, ls="--", label="ln 10: a constant guess")
    loss.set(xlabel="epoch (constant lr 1e-4)", ylabel="test loss")
    for ax in axes:
        ax.legend(fontsize=8)


def by_run(curve: pd.DataFrame):
    """(arch, BN, seed), and that run's rows of `curves` (none where nothing is stored)."""
    return curve.groupby(level=["arch", "bn", "seed"]) if len(curve) else []


HEALTH = ("test loss", "features' input share", "logit spread", "gradient's norm")


def plot_depths(axes, t: Tables) -> None:
    """Per network without BN (by depth), per epoch: its test loss and its health (one panel each of
    HEALTH); a colour per depth, seed 0 solid, each run named with its precision."""
    plain = sorted((((DEPTHS[arch], seed), run) for (arch, bn, seed), run in by_run(t.curves) if not bn),
                   key=lambda item: item[0])
    colour = {depth: f"C{i}" for i, depth in enumerate(sorted({depth for (depth, _), _ in plain}))}
    for ax, column in zip(axes, HEALTH):
        for (depth, seed), run in plain:
            run = run.droplevel(["arch", "bn", "seed"])
            ax.plot(run.index, run[column], color=colour[depth], ls="-" if seed == 0 else "--", marker="o" if len(run) < 3
                    else None, label=f"ResNet-{depth}, seed {seed} ({run['precision'].iloc[0]})")
        if column == "test loss":
            ax.axhline(PLATEAU_LOSS, color="k", lw=0.8, ls="--")
        ax.set(xlabel="epoch (constant lr 1e-4)", ylabel=column, yscale="linear" if column == "test loss" else "log")
    if axes[0].get_legend_handles_labels()[0]:  # a run to name (the ln 10 line has no label)
        axes[-1].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
