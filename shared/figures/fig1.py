"""Figure 1 from stored training runs: tables, claims, the short schedule's targets and plots.

The notebook `01_fig1_accuracy` calls these (the learning-rate sweep of `09_lr_sweep`, which judges
runs by the same rules, is shared.figures.sweep); every run is a stored result of `shared.train` (its
"status", "failure", "metrics", "initial_loss", "first_above_step", ...).
"""

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..claims import Claim, holds, judged, slug, unjudged_reason
from ..config import TRAINING_EXPERIMENT, TrainConfig, setting_name
from ..grids import DIVERGENCE_STEPS, divergence_grid, fig1_grid, warmup_grid
from ..compute import config_runs
from ..train import run_grid
from . import escape, plateau
from .divergence import CHANCE, divergence_summary, divergence_table, trained
from .protocol import Source

# Fig 1's final test accuracies, read off the paper's figure
PAPER_TEST_ACC = {"BN, lr 0.1": 0.932, "BN, lr 0.003": 0.905, "BN, lr 0.0001": 0.813,
                  "no BN, lr 0.0001": 0.820}
PAPER_SETTINGS = tuple(PAPER_TEST_ACC)  # the four curves the paper draws
# the paper's colours (matplotlib's default cycle): BN 0.003 blue, BN 0.1 orange, BN 1e-4 green,
# no BN 1e-4 red; the settings it leaves out get the next ones
PAPER_COLOURS = {"BN, lr 0.003": "C0", "BN, lr 0.1": "C1", "BN, lr 0.0001": "C2", "no BN, lr 0.0001": "C3",
                 "no BN, lr 0.003": "C4", "no BN, lr 0.1": "C5"}
NEAR_CHANCE = 0.02  # a run within this of chance has learned too little for a comparison to mean anything


def near_chance(*accuracies: float) -> bool:
    """Every one of `accuracies` within NEAR_CHANCE of chance: comparing them says nothing."""
    return all(a <= CHANCE + NEAR_CHANCE for a in accuracies)


def completed(found: list[dict]) -> dict[int, list[dict]]:
    """Per seed, the per-epoch metrics of its completed run in `found`."""
    return {r.provenance["seed"]: r.result["metrics"] for r in found if r.result["status"] == "completed"}


def first_drop(metrics: list[dict]) -> int | None:
    """The 0-based index of a run's first epoch at a lower rate than its first epoch's, or None (a
    constant rate). Read from a run whose first epoch is at the schedule's rate (no warm-up)."""
    rates = [m["lr"] for m in metrics]
    return next((i for i, r in enumerate(rates) if r < rates[0]), None)


def curves(found: list[dict], key: str) -> np.ndarray | None:
    """[seeds, epochs] of metric `key` over the completed runs (all of one config have one length)."""
    done = [r.result for r in found if r.result["status"] == "completed"]
    return np.array([[m[key] for m in r["metrics"]] for r in done]) if done else None


def final_table(runs: dict[str, list[dict]]) -> pd.DataFrame:
    """Per setting: seeds, how many diverged or failed to learn, and the last epoch's accuracies
    (mean over the completed runs), beside the paper's final test accuracy."""
    rows = []
    for name, found in runs.items():
        results = [r.result for r in found]
        done = [r for r in results if r["status"] == "completed"]
        last = [r["metrics"][-1] for r in done]
        mean = lambda key: np.mean([m[key] for m in last]) if last else np.nan
        rows.append({"setting": name, "seeds": len(results), "diverged": len(results) - len(done),
                     "failed to learn": sum(not trained(r) for r in done),
                     "epochs": done[0]["epochs"] if done else np.nan,
                     "train acc": mean("train_acc"), "test acc": mean("test_acc"),
                     "test acc std": np.std([m["test_acc"] for m in last]) if last else np.nan,
                     "paper test acc": PAPER_TEST_ACC.get(name, np.nan)})
    return pd.DataFrame(rows).set_index("setting")


def plot_accuracy(axes, runs: dict[str, list[dict]]) -> None:
    """Train and test accuracy against % of training, mean over seeds with a min..max band, in the
    paper's colours (PAPER_COLOURS); the paper's four settings solid, the runs it leaves out
    dashed (where any of their runs completed: a diverged run has no curve). On the test panel a
    triangle at 100 % marks the paper's final test accuracy of each of its settings that we drew."""
    taken = {PAPER_COLOURS[name] for name in runs if name in PAPER_COLOURS}
    spare = itertools.cycle([f"C{i}" for i in range(10) if f"C{i}" not in taken] or ["C9"])
    colours = {name: PAPER_COLOURS.get(name) or next(spare) for name in runs}
    for ax, key, title in zip(axes, ("train_acc", "test_acc"), ("train accuracy", "test accuracy")):
        for name, found in runs.items():
            acc = curves(found, key)
            if acc is None:
                continue
            x = 100 * np.arange(1, acc.shape[1] + 1) / acc.shape[1]
            ax.plot(x, acc.mean(0), color=colours[name], ls="-" if name in PAPER_SETTINGS else "--",
                    label=f"{name} ({len(acc)} seed(s))")
            ax.fill_between(x, acc.min(0), acc.max(0), color=colours[name], alpha=0.25)
            if key == "test_acc" and name in PAPER_TEST_ACC:
                ax.plot(100, PAPER_TEST_ACC[name], "<", color=colours[name], ms=8, clip_on=False,
                        label=f"_paper's final, {name}")
        if key == "test_acc" and any(name in PAPER_TEST_ACC for name in runs):
            ax.plot([], [], "<", color="grey", label="the paper's final test accuracy")
        ax.axhline(CHANCE, color="grey", ls=":", lw=1)
        ax.set(xlabel="% of training", ylabel=title, ylim=(0, 1))


def judge(finals: pd.DataFrame, divergence: pd.DataFrame, preset: str) -> list[Claim]:
    """Fig 1's claims, the paper's numbers beside ours. Accuracy levels are compared only for the
    paper preset; the equality of BN and no BN at 1e-4 needs the full schedule (the paper's runs
    at 1e-4 took thousands of epochs); the other claims are judged for every preset but smoke.
    Without BN a rate diverges if every run at it did (Fig 1's and the probes), partly if some did."""
    acc = finals["test acc"]
    smoke = unjudged_reason(preset)
    full = (f"{preset} preset: rate 1e-4 needs the full schedule (the truncated schedule tests it: "
            "no_bn_leaves_plateau, bn_no_bn_track)" if preset != "paper" else None)
    missing = "runs missing"

    def versus_paper(name: str) -> Claim:
        ours, paper = acc.get(name, np.nan), PAPER_TEST_ACC[name]
        return judged(f"final_test_acc_{slug(name)}",
                      "Final test accuracy, " + name.replace(", lr", " lr"), f"{paper:.1%}",
                      "not run" if np.isnan(ours) else f"{ours:.1%}",
                      holds(bool(abs(ours - paper) < 0.02)),
                      unless=unjudged_reason(preset, needs="paper") or (missing if np.isnan(ours) else None))

    def comparison(key: str, claim: str, paper: str, settings: tuple[str, str], rule, needs: str | None) -> Claim:
        """A claim comparing the two `settings` by `rule`(their accuracy gap) -> verdict: never judged
        where either is missing or both are within NEAR_CHANCE of chance (two runs that learned
        nothing compare as equal)."""
        (a, b), pair = settings, (acc.get(settings[0], np.nan), acc.get(settings[1], np.nan))
        gap = pair[0] - pair[1]
        verdict = rule(gap)
        at_chance = not np.isnan(gap) and near_chance(*pair)
        ours = "not run" if np.isnan(gap) else f"{100 * gap:+.1f} points ({a} {pair[0]:.1%}, {b} {pair[1]:.1%})"
        return judged(key, claim, paper, ours, verdict, unless=smoke or needs or (missing if np.isnan(gap) else None)
                      or (f"both within {100 * NEAR_CHANCE:.0f} points of chance: nothing learned to compare"
                          if at_chance else None))

    claims = [versus_paper(name) for name in PAPER_SETTINGS]
    claims.append(comparison("small_rate_bn_equals_no_bn",
                             "At the same small rate (1e-4), BN and no BN end about equal", "0.7 points apart",
                             ("BN, lr 0.0001", "no BN, lr 0.0001"), lambda gap: holds(bool(abs(gap) < 0.02)), full))
    claims.append(comparison("bn_gain_from_large_rate",
                             "BN's gain comes from the larger rate: BN 0.1 beats BN 1e-4", "+11.9 points",
                             ("BN, lr 0.1", "BN, lr 0.0001"), lambda gap: holds(bool(gap > 0.05)), None))
    claims.append(ordering_claim(runs_ordering(finals), unless=smoke or missing_of(finals, ORDERED)))
    for lr in (0.003, 0.1):
        name = setting_name(TrainConfig(bn=False, lr=lr))
        in_fig1 = f"{int(finals.loc[name, 'diverged'])}/{int(finals.loc[name, 'seeds'])} in Fig 1's runs"
        probes = divergence.xs(lr, level="lr") if lr in divergence.index.get_level_values("lr") else divergence.iloc[:0]
        n_div = int((probes["status"] == "diverged").sum())
        runs = finals.loc[name, "seeds"] + len(probes)
        diverged = finals.loc[name, "diverged"] + n_div
        claims.append(judged(f"no_bn_diverges_at_{slug(f'{lr:g}')}",
                             f"Without BN, rate {lr:g} diverges", "diverges (not shown)",
                             f"diverged: {in_fig1}, {n_div}/{len(probes)} on the full training set",
                             holds(bool(diverged == runs), partly=bool(diverged > 0)),
                             unless=smoke or (missing if runs == 0 else None)))
    return claims


# Fig 1's settings with BN from the largest rate to the smallest: the paper's ordering of their final
# test accuracies (93.2 > 90.5 > 81.3 %), "the larger rate gives the better network"
ORDERED = ("BN, lr 0.1", "BN, lr 0.003", "BN, lr 0.0001")


def missing_of(finals: pd.DataFrame, names) -> str | None:
    """"runs missing" where a setting of `names` has no completed run in `finals`."""
    absent = [n for n in names if n not in finals.index or np.isnan(finals.loc[n, "test acc"])]
    return f"runs missing: {', '.join(absent)}" if absent else None


def runs_ordering(finals: pd.DataFrame) -> dict:
    """ORDERED's final test accuracies: the means and whether they fall in ORDERED's order."""
    means = [finals.loc[n, "test acc"] if n in finals.index else np.nan for n in ORDERED]
    return {"means": means, "ordered": bool(all(a > b for a, b in zip(means, means[1:])))}


def seeds_in_order(runs: dict[str, list[dict]]) -> tuple[int, int]:
    """(seeds whose final test accuracies fall in ORDERED's order, seeds that have all three runs completed)."""
    full = [[accs[n] for n in ORDERED] for accs in seed_finals(runs, ORDERED).values() if len(accs) == len(ORDERED)]
    return sum(all(a > b for a, b in zip(accs, accs[1:])) for accs in full), len(full)


def ordering_claim(ordering: dict, unless: str | None = None) -> Claim:
    """With BN, the larger rate gives the better network (0.1 > 0.003 > 1e-4), on the mean final
    test accuracies of whatever schedule the preset trains; ours lists each rate's, "not run" where
    it has no completed run."""
    ours = ", ".join(f"{rate} {'not run' if np.isnan(a) else f'{a:.1%}'}"
                     for rate, a in zip(("0.1", "0.003", "1e-4"), ordering["means"]))
    return judged("bn_larger_rate_better",
                  "With BN the larger rate gives the better network (0.1, 0.003, 1e-4 in that order)",
                  "93.2 % > 90.5 % > 81.3 %", ours, holds(ordering["ordered"]), unless=unless)


# The short schedule's targets (Fig 1 on the cpu preset): BN at 0.1 reaches TARGET_BN_ACC (ResNet-110
# with BN reaches it in about 20 epochs of this schedule; the paper's 93.2 % needs its full one), and
# "tracks" means two mean test-accuracy curves stay within TRACK_GAP of each other at every epoch
TARGET_BN_ACC = 0.88
TRACK_GAP = 0.05


def curve_gap(a: list[dict], b: list[dict]) -> float:
    """The largest gap between two settings' mean test-accuracy curves over their common epochs."""
    x, y = curves(a, "test_acc"), curves(b, "test_acc")
    if x is None or y is None:
        return np.nan
    n = min(x.shape[1], y.shape[1])
    return float(np.abs(x.mean(0)[:n] - y.mean(0)[:n]).max())


def targets(runs: dict[str, list[dict]], finals: pd.DataFrame) -> pd.DataFrame:
    """The short schedule's targets, each with our number and whether it is met (NaN: runs missing)."""
    acc = finals["test acc"]
    in_order, seeds = seeds_in_order(runs)
    diverging = [setting_name(TrainConfig(bn=False, lr=lr)) for lr in (0.1, 0.003)]
    div_runs = sum(int(finals.loc[n, "seeds"]) for n in diverging if n in finals.index)
    div_done = sum(int(finals.loc[n, "diverged"]) for n in diverging if n in finals.index)
    gap = curve_gap(runs.get("BN, lr 0.0001", []), runs.get("no BN, lr 0.0001", []))
    bn01 = acc.get("BN, lr 0.1", np.nan)
    rows = [
        ("BN at 0.1 reaches the target test accuracy", f">= {TARGET_BN_ACC:.0%}",
         "not run" if np.isnan(bn01) else f"{bn01:.1%} (mean)",
         np.nan if np.isnan(bn01) else bn01 >= TARGET_BN_ACC),
        ("BN: 0.1 above 0.003 above 1e-4, in every seed", "every seed", f"{in_order} of {seeds} seeds",
         np.nan if not seeds else in_order == seeds),
        ("Without BN, 0.1 and 0.003 diverge", "every run", f"{div_done} of {div_runs} runs",
         np.nan if not div_runs else div_done == div_runs),
        ("Without BN at 1e-4 the curve tracks BN's at 1e-4", f"within {TRACK_GAP:.0%} at every epoch",
         "not run" if np.isnan(gap) else f"largest gap {gap:.1%}", np.nan if np.isnan(gap) else gap <= TRACK_GAP),
    ]
    return pd.DataFrame(rows, columns=["target", "wanted", "ours", "met"]).set_index("target")


def crossing(runs: dict[str, list[dict]]) -> dict | None:
    """BN's two larger rates against each other on their mean test-accuracy curves over the seeds
    both completed (the paper's Fig 1: 0.003 leads until the first rate drop, 0.1 after it):
    (0.003, 0.1) after the first epoch, at the last epoch before the first drop ("drop_epoch" is
    the first at the lower rate), the lift the drop gives each (that epoch against the one before)
    and at the last epoch, and the "seeds". None unless both have completed runs of one seed, of
    one length, whose rate drops."""
    fast, slow = completed(runs.get("BN, lr 0.003", [])), completed(runs.get("BN, lr 0.1", []))
    seeds = sorted(fast.keys() & slow.keys())
    if not seeds or any(len(fast[s]) != len(slow[s]) or any("lr" not in m for m in slow[s]) for s in seeds):
        return None  # nothing to pair, or runs stored before each epoch's rate was recorded
    d = first_drop(slow[seeds[0]])
    if d is None:
        return None
    f, s = (np.mean([[m["test_acc"] for m in found[seed]] for seed in seeds], axis=0) for found in (fast, slow))
    return {"first": (f[0], s[0]), "before_drop": (f[d - 1], s[d - 1]), "drop_epoch": d + 1,
            "lift": (f[d] - f[d - 1], s[d] - s[d - 1]), "last": (f[-1], s[-1]), "seeds": seeds}


def seed_finals(runs: dict[str, list[dict]], names=(*ORDERED, "no BN, lr 0.0001")) -> dict[int, dict[str, float]]:
    """Per seed, the final test accuracy of each of `names` with a completed run of that seed."""
    out: dict[int, dict[str, float]] = {}
    for name in names:
        for seed, metrics in completed(runs.get(name, [])).items():
            out.setdefault(seed, {})[name] = metrics[-1]["test_acc"]
    return dict(sorted(out.items()))


def findings(runs: dict[str, list[dict]], finals: pd.DataFrame, divergence: pd.DataFrame) -> list[str]:
    """What the stored runs show, in sentences with their numbers: where the network without BN
    diverges (Fig 1's runs and the probes together), how far BN trains at each rate against the
    paper, the ordering of BN's rates, and no BN at 1e-4 against BN at 1e-4; what is missing."""
    lines = []
    for lr, group in divergence.groupby(level="lr", sort=False):
        name = setting_name(TrainConfig(bn=False, lr=lr))
        own = [r.result for r in runs.get(name, [])]
        statuses = list(group["status"]) + [r["status"] for r in own]
        steps = sorted(set(group["diverged at step"].dropna().astype(int))
                       | {r["diverged_step"] for r in own if r["status"] == "diverged"})
        line = (f"Without BN at {lr:g}: {statuses.count('diverged')} of {len(statuses)} runs diverged"
                + (f" (at step {', '.join(map(str, steps))})" if steps else ""))
        kept = group[group["status"] == "completed"]
        if len(kept):
            line += (f"; {len(kept)} did not (median loss at step {DIVERGENCE_STEPS - 1}: "
                     f"{kept['last loss'].median():.2f}; a constant guess scores ln 10 = 2.30)")
        lines.append(line + ".")
    for name in (*ORDERED, "no BN, lr 0.0001"):
        if name not in finals.index or np.isnan(finals.loc[name, "test acc"]):
            lines.append(f"{name}: not trained yet.")
            continue
        row = finals.loc[name]
        lines.append(f"{name}: {row['test acc']:.1%} test accuracy ({row['train acc']:.1%} train) after "
                     f"{row['epochs']:.0f} epochs, mean of {row['seeds']:.0f} seed(s), the paper {row['paper test acc']:.1%}"
                     f" after its full schedule" + ("; it failed to learn" if row["failed to learn"] else "") + ".")
    ordering = runs_ordering(finals)
    if not missing_of(finals, ORDERED):
        in_order, seeds = seeds_in_order(runs)
        lines.append(f"With BN, 0.1 > 0.003 > 1e-4 in final test accuracy: {'yes' if ordering['ordered'] else 'no'} "
                     f"on the means, in {in_order} of {seeds} seed(s).")
    cross = crossing(runs)
    if cross:
        pair = lambda key: f"{cross[key][0]:.1%} against {cross[key][1]:.1%}"
        lines.append(f"BN at 0.003 against 0.1 (mean curves of seed(s) {', '.join(map(str, cross['seeds']))}, "
                     f"which both completed): after epoch 1 {pair('first')}; at epoch "
                     f"{cross['drop_epoch'] - 1}, before the first rate drop, {pair('before_drop')}; the drop lifts "
                     f"them by {100 * cross['lift'][0]:+.1f} and {100 * cross['lift'][1]:+.1f} points; at the end "
                     f"{pair('last')}.")
    by_seed = seed_finals(runs)
    if len(by_seed) > 1:
        lines += [f"Seed {seed}: " + ", ".join(f"{name} {acc:.1%}" for name, acc in accs.items()) + "."
                  for seed, accs in by_seed.items()]
    gap = curve_gap(runs.get("BN, lr 0.0001", []), runs.get("no BN, lr 0.0001", []))
    if not np.isnan(gap):
        lines.append(f"At 1e-4 the test-accuracy curves with and without BN are at most {gap:.1%} apart "
                     f"(the paper's track each other over its full schedule).")
    return lines


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    """Fig 1's stored training runs: its curves', the divergence panel's and the warm-up ablation's."""
    runs: dict[str, list[dict]]                          # `setting_name` -> runs, one per seed
    probes: list[tuple[TrainConfig, list[dict]]]         # the divergence probes, each with its runs
    warmup: list[dict]                                   # BN at 0.1 after a warm-up (shared.figures.warmup)
    start: plateau.Runs                                  # the paper's schedule truncated (shared.figures.plateau)


def load(source: Source, together: int = 1) -> Runs:
    """The runs of the preset's Fig 1 grid, divergence probes and warm-up ablation, after training
    `source.compute`'s missing ones, `together` at a time (`shared.train.run_grid`)."""
    grid, probes, warm = fig1_grid(source.preset), divergence_grid(source.preset), warmup_grid(source.preset)
    if source.compute is not None:
        run_grid(grid + probes + warm, source.compute, TRAINING_EXPERIMENT, source.context, together)
    stored = lambda cfg: config_runs(TRAINING_EXPERIMENT, cfg, seeds=source.seeds)
    return Runs({setting_name(cfg): stored(cfg) for cfg in grid}, [(cfg, stored(cfg)) for cfg in probes],
                [r for cfg in warm for r in stored(cfg)], plateau.load(source.read_only))


@dataclass(frozen=True)
class Tables:
    finals: pd.DataFrame        # `final_table`: per setting
    targets: pd.DataFrame       # `targets`: the short schedule's
    divergence: pd.DataFrame    # `divergence_table`: per probe
    divergence_summary: pd.DataFrame  # `divergence_summary`: per rate
    start: plateau.Tables       # the truncated schedule's (`shared.figures.plateau`)
    escape: pd.DataFrame        # its runs without BN: the collapse and the escape (`shared.figures.escape`)


def tables(found: Runs) -> Tables:
    finals, divergence, start = final_table(found.runs), divergence_table(found.probes), plateau.tables(found.start)
    return Tables(finals, targets(found.runs, finals), divergence, divergence_summary(divergence), start,
                  escape.table(start))


def claims(t: Tables, preset: str) -> list[Claim]:
    return judge(t.finals, t.divergence, preset) + plateau.judge(t.start, preset) + escape.judge(t.escape, preset)
