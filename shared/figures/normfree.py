"""Beyond the paper: networks without BN that do not explode (SkipInit, Fixup), at initialisation.

If the paper's explanation is right (Sec. 3-4: without BN the activations grow with depth, the
gradient turns input-independent and only tiny steps are safe), then a network without BN whose
activations do not grow should allow large steps too. SkipInit (De & Smith 2020) and Fixup (Zhang,
Dauphin & Ma 2019) remove the growth at initialisation by zero-initialising each residual branch's
contribution (`shared.models`). From stored runs of the at-initialisation experiments, with the
plain ResNet-110 with BN and without it beside them: Fig 5's growth of the channel stds with
depth, Fig 6's one-class prediction, Fig 3's stable step on the first mini-batch and the residual
stream's growth per block (signal propagation). Fig 2 is left out: at initialisation both schemes
give every weight inside a residual branch an exactly zero gradient (SkipInit's branch scalar and
Fixup's last convolution and classifier are 0; `tests/test_models_normfree.py`). The notebook
`12_normfree` calls these.
"""

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..claims import Claim, holds, judged, slug, unjudged_reason
from ..config import TRAINING_EXPERIMENT, train_config
from ..compute import config_runs
from ..train import run_training
from . import fig3, fig5, fig6, signal_propagation
from .fig3 import reduced_config
from .fig6 import network_stats
from .protocol import Source, probe_runs, training_preset
from .fig1 import plot_accuracy
from .relative_loss import first_above
from .signal_propagation import spp_frame
from .sweep import outcomes

@dataclass(frozen=True)
class Scheme:
    """A network compared: its label in the plots and the tables as shown, its config fields
    (beside the preset's), and its network's key in a stored run ("bn", "no_bn")."""
    label: str
    fields: dict
    network: str


# The networks compared, keyed in the tables by name. Both schemes use option-A shortcuts
# (subsample and zero-pad: Fixup's authors' choice), so that no unnormalised convolution stays on
# the residual stream outside the branches they scale, and at initialisation each network is its
# shortcut path alone.
SCHEMES = {
    "plain_bn": Scheme("ResNet-110 with BN", {}, "bn"),
    "plain_no_bn": Scheme("ResNet-110 w/o BN", {}, "no_bn"),
    "skipinit": Scheme("SkipInit", {"residual": "skipinit", "shortcut": "A"}, "no_bn"),
    "fixup": Scheme("Fixup", {"residual": "fixup", "shortcut": "A"}, "no_bn"),
}
LABELS = {key: scheme.label for key, scheme in SCHEMES.items()}
NORM_FREE = ("skipinit", "fixup")  # the schemes without BN and without the explosion
FIG3_FIELDS = dict(probe_batches=(1,), sizes=40)  # the depth ladder's: mini-batch 1, 0.15 decade apart


# the at-initialisation measurements compared, by experiment name
MEASUREMENTS = {m.name: m for m in (fig5.MEASUREMENT, fig6.MEASUREMENT, fig3.MEASUREMENT, signal_propagation.MEASUREMENT)}


def scheme_config(experiment: str, preset: str, key: str):
    cfg = MEASUREMENTS[experiment].config(preset, **SCHEMES[key].fields)
    if experiment == "fig3_relative_loss":  # never more step sizes than the preset's
        cfg = reduced_config(cfg, FIG3_FIELDS["probe_batches"], FIG3_FIELDS["sizes"])
    return cfg


AT_INIT = ("fig5_depth_profile", "fig6_logit_gradients", "fig3_relative_loss", "signal_propagation")


def scheme_runs(experiment: str, source: Source) -> dict[str, list[dict]]:
    """The stored runs of `experiment` for every scheme, {key: runs}, after computing
    `source.compute`'s missing ones (a plain run holds both the BN and the no-BN network;
    `SCHEMES` says which one a scheme reads)."""
    return {key: probe_runs(MEASUREMENTS[experiment], scheme_config(experiment, source.preset, key), source)
            for key in SCHEMES}


def at_init_table(fig5: dict, fig6: dict, fig3: dict, signal: dict) -> pd.DataFrame:
    """Per scheme (rows): Fig 5's log10 channel std at the first and the last convolution shown
    and the growth between them (mean over seeds), Fig 6's share of the first batch on the most
    common class and mean top probability, Fig 3's stable step on mini-batch 1 (median; inf:
    never within the sweep), and the residual stream's log10 variance after the last block and its
    growth per block (NaN where a scheme has no runs)."""
    rows = {}
    for key, scheme in SCHEMES.items():
        row, name = {}, scheme.network
        if fig5[key]:
            layers = sorted(int(k) for k in fig5[key][0].result[name])[:-1]  # the last is the classifier
            logs = np.array([[np.log10(r.result[name][str(k)]["std"]) for k in (layers[0], layers[-1])]
                             for r in fig5[key]]).mean(0)
            row.update({f"Fig 5: log10 std, layer {layers[0]}": logs[0],
                        f"Fig 5: log10 std, layer {layers[-1]}": logs[1], "Fig 5: growth (decades)": logs[1] - logs[0]})
        if fig6[key]:
            stats = [network_stats(r.result, name) for r in fig6[key]]
            row.update({"Fig 6: top-class share": np.mean([st.top_class_share for st in stats]),
                        "Fig 6: top p": np.mean([st.top_p for st in stats])})
        if fig3[key]:
            row["Fig 3: stable step"] = float(np.median([first_above(r.result, name, "1", 1e3) for r in fig3[key]]))
        if signal[key]:
            variance = np.array([[r.result[name][b]["variance"] for b in sorted(r.result[name], key=int)]
                                 for r in signal[key]])
            curve = np.log10(variance).mean(0)
            row.update({"stream: log10 variance, last block": curve[-1],
                        "stream: growth per block (decades)": np.polyfit(np.arange(len(curve)), curve, 1)[0]})
        row["seeds"] = max(len(found[key]) for found in (fig5, fig6, fig3, signal))
        rows[key] = row
    return pd.DataFrame(rows).T


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table keyed by scheme (`at_init_table`, `training_table`) as the notebook shows it: the
    schemes by their labels."""
    return table.rename(index=LABELS)


def judge(table: pd.DataFrame, largest_size: float, preset: str) -> list[Claim]:
    """The thesis's predictions for the schemes without BN and without the explosion: their
    activations do not grow with depth (Fig 5's growth within 1 decade, where the plain network
    without BN grows more); their stable step is at least 10x the plain network's without BN (as
    BN's is); and their outputs are not confident at initialisation (mean top probability below
    0.5; the top-class share is shown but not judged: Fixup's logits are exactly 0, so every class
    ties and the "most likely class" is the first for every input)."""
    unless = unjudged_reason(preset)
    plain = table.loc["plain_no_bn"]
    out = []
    for key in NORM_FREE:
        row, label = table.loc[key], LABELS[key]
        growth, step = row.get("Fig 5: growth (decades)", np.nan), row.get("Fig 3: stable step", np.nan)
        share, top_p = row.get("Fig 6: top-class share", np.nan), row.get("Fig 6: top p", np.nan)
        capped = min(step, largest_size)
        ratio = capped / plain.get("Fig 3: stable step", np.nan)
        out += [
            judged(f"{key}_no_growth",
                   f"{label}: the activations do not grow with depth (Fig 5, layer 6 to 102)",
                   "(the thesis: no explosion without BN)",
                   f"{growth:+.2g} decades (plain w/o BN {plain.get('Fig 5: growth (decades)', np.nan):+.2g})",
                   holds(bool(abs(growth) <= 1)), unless),
            judged(f"{key}_large_steps_safe",
                   f"{label}: large steps are safe (Fig 3's stable step ≥ 10x the plain network's w/o BN)",
                   "(the thesis: no explosion, large steps)",
                   f"{'never within the sweep' if np.isinf(step) else f'{step:.2g}'}; {ratio:.3g}x the plain network's",
                   holds(bool(ratio >= 10), partly=bool(ratio > 1)), unless),
            judged(f"{key}_no_confident_prediction",
                   f"{label}: no confident prediction at initialisation (Fig 6: mean top probability below 0.5)",
                   "(the thesis: the output does not explode)",
                   f"top probability {top_p:.2g} (plain w/o BN {plain.get('Fig 6: top p', np.nan):.2g}); "
                   f"top-class share {share:.2g}", holds(bool(top_p < 0.5)), unless),
        ]
    return out


def signal_frame(signal: dict[str, list[dict]]) -> pd.DataFrame:
    """`shared.figures.signal_propagation.spp_frame` of each scheme's own network, one frame for its `plot_spp`."""
    frames = [spp_frame({key: runs}, network=SCHEMES[key].network) for key, runs in signal.items() if runs]
    return pd.concat(frames)


def plot_steps(ax, fig3: dict[str, list[dict]]) -> None:
    """Fig 3 on mini-batch 1 for every scheme: the relative loss against the step size (the
    median over seeds; band: the range), the threshold 10^3 dashed."""
    for i, (key, runs) in enumerate(fig3.items()):
        if not runs:
            continue
        name = SCHEMES[key].network
        sizes = np.array(runs[0].result["sizes"])
        curves = np.array([[np.nan if v is None else v for v in r.result[name]["batches"]["1"]["relative_loss"]]
                           for r in runs], dtype=float)
        ax.plot(sizes, pd.DataFrame(curves).median(), color=f"C{i}", label=LABELS[key])  # NaN-skipping, no warning
        ax.fill_between(sizes, np.fmin.reduce(curves, 0), np.fmax.reduce(curves, 0), color=f"C{i}", alpha=0.2, lw=0)
    ax.axhline(1e3, color="C3", ls="--", lw=0.8)
    ax.set(xscale="log", yscale="log", ylim=(1e-2, 1e8), xlabel="step size", ylabel="relative loss (mini-batch 1)")


# ---- in training: do they train at the rates where the plain network without BN diverges? ----

TRAINING_RATES = (0.1, 0.003)  # Fig 1's larger rates: the plain ResNet-110 w/o BN diverges at both


def training_config(key: str, preset: str, lr: float):
    """Fig 1's training run of `preset` (the `preview` preset on a CPU) for scheme `key` at `lr`:
    the plain ones are Fig 1's own runs."""
    scheme = SCHEMES[key]
    return train_config(preset, lr=lr, bn=scheme.network == "bn", **scheme.fields)


def load_training(preset: str, seeds=None) -> dict[tuple[str, float], list[dict]]:
    """The stored training runs {(key, lr): runs} of every scheme at TRAINING_RATES."""
    return {(key, lr): config_runs(TRAINING_EXPERIMENT, training_config(key, preset, lr), seeds=seeds)
            for key in SCHEMES for lr in TRAINING_RATES}


def training_table(runs: dict[tuple[str, float], list[dict]]) -> pd.DataFrame:
    """Rows (scheme, rate): how many seeds, how many diverged (and at which step, the first seed's),
    failed to learn or trained (`shared.figures.fig1`'s definitions), and the final test accuracy of the
    completed runs (mean; NaN where none completed)."""
    rows = []
    for (key, lr), found in runs.items():
        row = outcomes(found)
        steps = [r.result["diverged_step"] for r in found if r.result["status"] != "completed"]
        rows.append({"scheme": key, "lr": lr, "seeds": row["seeds"], "diverged": row["diverged"],
                     "diverged at step": steps[0] if steps else np.nan,
                     **{k: row[k] for k in ("failed to learn", "trained", "test acc")}})
    return pd.DataFrame(rows).set_index(["scheme", "lr"])


def plot_training(axes, runs: dict[tuple[str, float], list[dict]]) -> None:
    """`shared.figures.fig1.plot_accuracy` of every scheme and rate with runs ("SkipInit, lr 0.1", ...)."""
    plot_accuracy(axes, {f"{LABELS[key]}, lr {lr:g}": found for (key, lr), found in runs.items() if found})


def training_claims(table: pd.DataFrame, preset: str) -> list[Claim]:
    """The hard half of the thesis's test: at each of TRAINING_RATES, where the plain network
    without BN diverges, SkipInit and Fixup train (every stored seed; "partly" if they do not
    diverge but fail to learn). Not judged without runs; judged on a reduced preset, the note says
    which and on how many seeds."""
    out = []
    for key in NORM_FREE:
        for lr in TRAINING_RATES:
            row, plain, label = table.loc[(key, lr)], table.loc[("plain_no_bn", lr)], LABELS[key]
            missing = 0 if row["seeds"] and plain["seeds"] else 1
            accuracy = "" if np.isnan(row["test acc"]) else f"; test acc {row['test acc']:.3g}"
            ours = (f"{row['trained']:.0f} of {row['seeds']:.0f} seed(s) train, {row['diverged']:.0f} diverge"
                    f"{accuracy} (plain w/o BN: {plain['diverged']:.0f} of {plain['seeds']:.0f} diverge)")
            verdict = holds(bool(row["seeds"] and row["trained"] == row["seeds"]),
                            partly=bool(row["seeds"] and row["diverged"] == 0))
            preview = "" if preset == "paper" else (
                f"{preset} preset, {row['seeds']:.0f} seed(s): a preview, not the paper's schedule")
            claim = judged(f"{key}_trains_at_lr_{slug(f'{lr:g}')}",
                           f"{label} trains at lr {lr:g}, where plain ResNet-110 w/o BN diverges",
                           "(the thesis: no explosion, large rates)", ours, verdict, unjudged_reason(preset, missing))
            out.append(claim if claim.note else replace(claim, note=preview))
    return out


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    """The schemes' stored runs: each at-initialisation experiment's, and in training."""
    at_init: dict[str, dict[str, list[dict]]]         # AT_INIT experiment -> `scheme_runs`
    train_preset: str
    training: dict[tuple[str, float], list[dict]]     # `load_training`


def load(source: Source, train_preset: str | None = None, compute_training: bool = False) -> Runs:
    """The schemes' at-initialisation runs and their training runs under `train_preset` (None:
    `training_preset`), training `source.compute`'s missing ones of SkipInit and Fixup if
    `compute_training` (the plain networks' are Fig 1's)."""
    at_init = {experiment: scheme_runs(experiment, source) for experiment in AT_INIT}
    train_preset = train_preset or training_preset(source.preset)
    if compute_training and source.compute is not None:
        for key in NORM_FREE:
            for lr in TRAINING_RATES:
                run_training(training_config(key, train_preset, lr), source.compute, TRAINING_EXPERIMENT,
                             source.context)
    return Runs(at_init, train_preset, load_training(train_preset, source.seeds))


@dataclass(frozen=True)
class Tables:
    at_init: pd.DataFrame     # `at_init_table`: per scheme
    largest_size: float       # the Fig 3 sweep's largest step size
    train_preset: str
    training: pd.DataFrame    # `training_table`: per (scheme, rate)


def tables(found: Runs) -> Tables:
    fig3 = found.at_init["fig3_relative_loss"]
    largest = max(next(runs for runs in fig3.values() if runs)[0].result["sizes"])
    return Tables(at_init_table(*(found.at_init[e] for e in AT_INIT)), largest, found.train_preset,
                  training_table(found.training))


def claims(t: Tables, preset: str) -> list[Claim]:
    """The claims at initialisation (`judge`), then in training (`training_claims`, judged on the
    training runs' preset)."""
    return judge(t.at_init, t.largest_size, preset) + training_claims(t.training, t.train_preset)
