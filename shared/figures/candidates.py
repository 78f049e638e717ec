"""Which ResNet-110 did the paper use? Candidate networks scored against the paper's figures.

The paper states a 110-layer CIFAR ResNet with Xavier initialisation, nothing more. Three choices it
leaves open change every at-initialisation figure: the shortcut at the two stage transitions
(option A, zero-padding, or option B, a 1x1 convolution + BN; He et al. 2016, Sec. 3.3), the
convolutions' init and the classifier's init. Each candidate is measured with the figures' own
experiments (`shared.experiments`), and `shared.paper` turns each figure into one distance to the
paper's values (0 = on the paper's numbers; in decades, so 1 = a factor of 10 off).
"""

import time

import numpy as np
import pandas as pd

from .. import paper
from ..config import TRAINING_EXPERIMENT
from ..grids import NETWORK_CANDIDATES, NETWORK_EPOCHS, NETWORK_LR, network_config
from ..compute import RunContext, measured
from ..compute import config_runs
from . import candidate_networks as networks, fig2, fig3, fig4, fig5, fig6, table1
from .candidate_networks import (CONV_INITS, DEFAULT_SEEDS, FC_CHOICES, MEASURES, SEEDS,  # noqa: F401 (re-exported)
                                 SHORTCUT_CHOICES, Candidate, candidate_seeds, candidates)
from .divergence import trained

# experiment name -> its measurement, for the figures that score the candidates
MEASUREMENTS = {m.name: m for m in (fig2.MEASUREMENT, fig3.MEASUREMENT, fig4.MEASUREMENT, fig5.MEASUREMENT,
                                    fig6.MEASUREMENT, table1.MEASUREMENT)}


def candidate_config(experiment: str, candidate: Candidate, preset: str = "paper"):
    """`experiment`'s config for `candidate` under `preset` (`candidate_networks.candidate_config`)."""
    return networks.candidate_config(MEASUREMENTS[experiment], candidate, preset)


def candidate_runs(experiment: str, candidate: Candidate, preset: str = "paper",
                   seeds: tuple[int, ...] | None = None, ctx: RunContext | None = None) -> list[dict]:
    """The stored runs of `experiment` for `candidate` (computed where missing)."""
    cfg, measurement = candidate_config(experiment, candidate, preset), MEASUREMENTS[experiment]
    return [measured(experiment, cfg, seed, measurement.measure, ctx)
            for seed in seeds or candidate_seeds(experiment, preset)]


# table column -> (experiment, distance function of the runs' results)
DISTANCES = {
    "Fig 2": ("fig2_gradients", paper.fig2_distance),
    "Fig 3": ("fig3_relative_loss", paper.fig3_distance),
    "Fig 4": ("fig4_diverging_update", paper.fig4_distance),
    "Fig 5 (ln)": ("fig5_depth_profile", lambda results: paper.fig5_distance(results, "ln")),
    "Fig 5 (log10)": ("fig5_depth_profile", lambda results: paper.fig5_distance(results, "log10")),
    "Fig 6": ("fig6_logit_gradients", paper.fig6_distance),
    "Table 1": ("table1_contributions", paper.table1_distance),
}


def distance_table(preset: str = "paper", compute: bool = False, data_dir=None) -> pd.DataFrame:
    """One row per candidate, one column per figure: its distance to the paper (`shared.paper`),
    then "mean rank": the candidate's rank per figure (1 = closest), averaged over the figures
    that every candidate has (Fig 5 counted once, under its better reading). Runs missing from the
    store are computed when `compute`, else their cell is NaN."""
    rows = []
    for candidate in candidates():
        row = {"candidate": candidate.name}
        for column, (experiment, distance) in DISTANCES.items():
            if compute:
                candidate_runs(experiment, candidate, preset, ctx=RunContext(data_dir=data_dir))
            runs = config_runs(experiment, candidate_config(experiment, candidate, preset))
            row[column] = distance([r.result for r in runs]) if runs else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("candidate")
    scored = table.drop(columns=["Fig 5 (ln)", "Fig 5 (log10)"])
    scored["Fig 5"] = table[["Fig 5 (ln)", "Fig 5 (log10)"]].min(axis=1)
    table["mean rank"] = scored.loc[:, scored.notna().all()].rank().mean(axis=1)
    return table.sort_values("mean rank")


def training_table(preset: str = "paper") -> pd.DataFrame:
    """The network question in training (`shared.grids.network_grid`): per candidate of
    NETWORK_CANDIDATES, with and without BN at NETWORK_LR for the first NETWORK_EPOCHS epochs on the
    full training set (seed 0), the last epoch's train loss and test accuracy, the logits' spread
    across images and the dead ReLUs of stage 3 (`shared.health`), and whether it trains
    (`shared.figures.divergence.trained`: not diverged, train loss below its initial loss, test accuracy above
    the chance rule's). Rows missing from the store are left out."""

    rows = []
    for fields in NETWORK_CANDIDATES:
        for bn in (False, True):
            cfg = network_config(fields, bn, preset)
            for run in config_runs(TRAINING_EXPERIMENT, cfg):
                result, last = run.result, run.result["metrics"][-1]
                health = last.get("health", {})
                rows.append({"candidate": Candidate(cfg.shortcut, cfg.init, cfg.fc_init).name,
                             "BN": bn, "seed": run.provenance["seed"], "initial loss": result["initial_loss"],
                             "train loss": last["train_loss"], "test acc": last["test_acc"],
                             "logit spread": health.get("logit_spread", {}).get("across_images", np.nan),
                             "dead ReLUs, stage 3": health.get("dead_relu", {}).get("stage3", np.nan),
                             "trains": trained(result)})
    columns = ["candidate", "BN", "seed", "initial loss", "train loss", "test acc", "logit spread",
               "dead ReLUs, stage 3", "trains"]
    return pd.DataFrame(rows, columns=columns).set_index(["candidate", "BN", "seed"])


def stored_runs(preset: str = "paper") -> dict[str, list[dict]]:
    """Every stored run behind the network choice, per experiment (the at-init figures of every
    candidate; "training": the candidates trained at NETWORK_LR), for the notebook's provenance."""
    found = {experiment: [r for candidate in candidates()
                          for r in config_runs(experiment, candidate_config(experiment, candidate, preset))]
             for experiment in dict.fromkeys(experiment for experiment, _ in DISTANCES.values())}
    found["training"] = [r for fields in NETWORK_CANDIDATES for bn in (False, True)
                         for r in config_runs(TRAINING_EXPERIMENT, network_config(fields, bn, preset))]
    return found


TRAINS_COLUMN = f"trains without BN at {NETWORK_LR:g} ({NETWORK_EPOCHS} epochs)"


def with_training_column(table: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """`table` (`distance_table`) with TRAINS_COLUMN: "yes" / "no" (with the final test accuracy)
    for the candidates trained without BN, "-" for the others."""
    no_bn = training.xs(False, level="BN") if len(training) else training
    column = {}
    for name in table.index:
        runs = no_bn.xs(name, level="candidate") if name in no_bn.index.get_level_values("candidate") else None
        column[name] = "-" if runs is None else ", ".join(
            f"{'yes' if row.trains else 'no'} ({row['test acc']:.1%})" for _, row in runs.iterrows())
    return table.assign(**{TRAINS_COLUMN: pd.Series(column)})


def shortcut_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """For each conv / classifier init, option B's distance minus option A's, per figure
    (negative: option B is closer to the paper)."""
    rows = {}
    for candidate in candidates():
        if candidate.shortcut is None:
            other = Candidate("B", candidate.init, candidate.fc_init)
            rows[candidate.name.removeprefix("A | ")] = table.loc[other.name] - table.loc[candidate.name]
    return pd.DataFrame(rows).T.drop(columns="mean rank")


def findings(table: pd.DataFrame) -> list[str]:
    """The comparison in sentences, with its numbers (the notebook's "What we found"). Candidates
    tied on the mean rank are named together, each with the figures it is closest on."""
    ranks = table["mean rank"]
    tied = list(table.index[np.isclose(ranks, ranks.min())])
    best = tied[0]
    figures = [c for c in table.columns if c != "mean rank" and table[c].notna().any()]
    wins = {name: [c for c in figures if table[c].idxmin() == name] for name in tied}
    b_minus_a = shortcut_comparison(table)
    closer = (b_minus_a < 0).to_numpy().sum()
    total = b_minus_a.notna().to_numpy().sum()
    default = Candidate("B", "xavier_uniform", "pytorch_default").name
    xavier_fc = Candidate("B", "xavier_uniform", "same").name
    closest = "; ".join(f"{name}, the closest on {', '.join(wins[name]) or 'no single figure'}" for name in tied)
    lines = [f"Closest overall (mean rank {ranks.min():.2f} of {len(table)}"
             + (f", a tie of {len(tied)}): " if len(tied) > 1 else "): ") + closest + ".",
             f"Option B is closer to the paper than option A with the same inits in {closer} of "
             f"{total} (init, figure) pairs.",
             f"Fig 5 under ln vs log10 for {best}: {table.loc[best, 'Fig 5 (ln)']:.2f} vs "
             f"{table.loc[best, 'Fig 5 (log10)']:.2f} decades RMS."]
    if default in table.index and xavier_fc in table.index:
        gaps = ", ".join(f"{c} {table.loc[default, c] - table.loc[xavier_fc, c]:+.2f}" for c in figures)
        lines.append(f"PyTorch's default classifier vs Xavier on the classifier (option B, Xavier "
                     f"convolutions), distance differences: {gaps}.")
    return lines


def fig5_breakdown(candidate: Candidate, preset: str = "paper") -> pd.DataFrame:
    """Fig 5's distance per curve and log reading for one candidate (rows: curves)."""
    runs = config_runs("fig5_depth_profile", candidate_config("fig5_depth_profile", candidate, preset))
    if not runs:
        return pd.DataFrame(columns=list(paper.LOG_READINGS))
    per_curve = paper.fig5_curve_distances([r.result for r in runs])
    names = {"bn": "with BN", "no_bn": "without BN", "abs_mean": "channel means", "std": "channel stds"}
    return pd.DataFrame({f"{names[stat]}, {names[net]}": d for (net, stat), d in per_curve.items()}).T


def plot_distances(ax, table: pd.DataFrame) -> None:
    """The distance table as a heatmap: colour = the candidate's rank in the column (1 = closest),
    numbers = the distances (columns differ in scale, so ranks are what the colours compare)."""
    import seaborn as sns
    distances = table.drop(columns="mean rank")
    sns.heatmap(distances.rank(), annot=distances, fmt=".2f", cmap="viridis", cbar_kws={"label": "rank"},
                ax=ax)
    ax.set(xlabel="", ylabel="")
    ax.grid(False)
    ax.tick_params(axis="x", rotation=30)


def plot_bn_std_by_shortcut(ax, preset: str = "paper") -> None:
    """Fig 5's channel stds with BN (natural log) for option A and option B shortcuts (Xavier
    convolutions, PyTorch-default classifier), mean over networks, against the paper's values."""
    ax.plot(paper.FIG5_LAYERS, paper.FIG5_LOG["bn", "std"], "k--o", label="paper (read off its Fig 5)")
    for shortcut in SHORTCUT_CHOICES:
        candidate = Candidate(shortcut, "xavier_uniform", "pytorch_default")
        runs = config_runs("fig5_depth_profile", candidate_config("fig5_depth_profile", candidate, preset))
        if not runs:
            continue
        layers = sorted(map(int, runs[0].result["bn"]))
        curve = [np.mean([np.log(r.result["bn"][str(k)]["std"]) for r in runs]) for k in layers]
        ax.plot(layers, curve, "-o", label=f"option {shortcut or 'A'} ({len(runs)} networks)")
    for transition in (38, 74):  # ResNet-110's first layers of stages 2 and 3
        ax.axvline(transition, color="grey", lw=0.8, ls=":")
    ax.set_xticks(paper.FIG5_LAYERS)
    ax.set(xlabel="Layer", ylabel="ln [channel std], with BN")


def main() -> None:
    """Compute every candidate's runs, the cheap experiments first."""
    for experiment in MEASURES:
        for candidate in candidates():
            start = time.perf_counter()
            candidate_runs(experiment, candidate)
            print(f"{experiment} {candidate.name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
