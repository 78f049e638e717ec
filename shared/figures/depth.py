"""Beyond the paper: how the explosion without BN, and the step it allows, depend on depth.

The paper's explanation is causal (Sec. 3-4): without BN the activations grow with depth at
initialisation (Fig 5), so the gradient is dominated by an input-independent direction and only
tiny steps are safe (Fig 3). One depth (110) cannot test that; a ladder of depths can. From stored
runs of two at-initialisation experiments of `shared.experiments`:

- "fig3_relative_loss" on mini-batch 1 (no training step before it): the largest step along the
  gradient before the loss passes 10^3 x its value, per depth (the "stable step");
- "signal_propagation" (Brock, De & Smith 2021; `shared.figures.signal_propagation`): per residual block,
  the mean squared channel mean and the mean channel variance of the residual stream.

And in training: the largest learning rate of a half-decade grid that does not diverge (loss
above 10^3 or not finite) in the first 200 steps on the full training set, found by bisection
over the grid with early stop on divergence (`train_ladder`, `python -m shared.figures.depth`).

The notebook `11_depth_ladder` calls these.
"""

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..claims import NOT_JUDGED, Claim, holds, judged, slug, unjudged_reason
from ..cli import seed_arg
from ..config import TRAINING_EXPERIMENT, TRAIN_PRESETS, check_choice
from ..grids import divergence_config, sweep_rates
from ..compute import RunContext, config_runs
from ..results import Store
from ..train import run_training
from . import fig3, fig5 as fig5_module, signal_propagation
from .fig3 import reduced_config
from .protocol import Source, probe_runs, training_preset
from .relative_loss import first_above
from .signal_propagation import NETWORKS, fig5_relation, spp_frame, spp_summary

DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}
# the preset's ladder: smoke keeps to the two smallest networks
PRESET_DEPTHS = {"smoke": ("resnet20", "resnet32"), "paper": tuple(DEPTHS)}
LADDER_FIELDS = dict(probe_batches=(1,), sizes=40)  # Fig 3 at initialisation, 0.15 decade apart
# The tables are keyed by the stored runs' names: the networks ("bn", "no_bn"), the architectures
# ("resnet110"); these are their labels in the plots and in the tables as shown (`shown`)
ARCH_LABELS = {arch: f"ResNet-{d}" for arch, d in DEPTHS.items()}
LADDER_LABELS = {f"{net}_{stat}": f"{label}: {stat}" for net, label in NETWORKS.items() for stat in ("median", "seeds")}
PAPER_RATES = {"bn": 0.1, "no_bn": 1e-4}  # the largest rates the paper trains ResNet-110 at (Fig 1)


def ladder_config(cfg, arch: str):
    """Fig 3's config `cfg` for the ladder: network `arch`, mini-batch 1 only, 40 step sizes
    (never more than the preset's)."""
    return reduced_config(cfg, LADDER_FIELDS["probe_batches"], LADDER_FIELDS["sizes"], arch=arch)


def stable_steps(runs_by_arch: dict[str, list[dict]]) -> pd.DataFrame:
    """Rows (depth, network, seed): the first step size whose relative loss on mini-batch 1
    exceeds 10^3 (a non-finite loss counts; inf: never within the sweep)."""
    rows = [{"depth": DEPTHS[arch], "network": name, "seed": r.provenance["seed"],
             "stable step": first_above(r.result, name, "1", 1e3)}
            for arch, runs in runs_by_arch.items() for r in runs for name in NETWORKS]
    return pd.DataFrame(rows).set_index(["depth", "network", "seed"]).sort_index()


def ladder_table(steps: pd.DataFrame, column: str = "stable step") -> pd.DataFrame:
    """Per depth (rows) and network: the median over seeds of `column` (the stable step, or
    `training_ladder`'s "stable rate"), and how many seeds (NaN rows, incomplete, left out), in
    columns "no_bn_median", "bn_median", "no_bn_seeds", "bn_seeds"."""
    grouped = steps[column].dropna().groupby(level=["depth", "network"])
    columns = [f"{net}_{stat}" for stat in ("median", "seeds") for net in ("no_bn", "bn")]
    if not grouped.ngroups:  # nothing complete yet
        return pd.DataFrame(columns=columns, index=pd.Index([], name="depth"), dtype=float)
    table = pd.concat({"median": grouped.median(), "seeds": grouped.size()}, axis=1).unstack("network")
    table.columns = [f"{net}_{stat}" for stat, net in table.columns]
    return table.reindex(columns=columns)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table of the ladder (`ladder_table`, `training_ladder`) as the notebook shows it: the
    networks by their labels."""
    return table.rename(index=NETWORKS, columns=LADDER_LABELS)


def ladder_claims(table: pd.DataFrame, largest_size: float, preset: str, what: str = "step") -> list[Claim]:
    """The explanation's prediction: without BN the stable step (`what`: or "rate in training")
    falls with depth (at every rung, and by at least 3x from the shallowest to the deepest
    network); with BN it stays within 3x (a step that never explodes counts at `largest_size`,
    the sweep's largest). Each claim is judged on the depths its network has (NaN: not yet), and
    needs two of them."""
    unless = unjudged_reason(preset)
    paper = "(the explanation's prediction)"
    steps = lambda values: ", ".join(f"{d}: {'≥ ' if v >= largest_size else ''}{v:.2g}" for d, v in values.items())
    no_bn = table["no_bn_median"].dropna().clip(upper=largest_size)
    bn = table["bn_median"].dropna().clip(upper=largest_size)
    claims = []
    for key, claim, values in (
            (f"no_bn_stable_{slug(what)}_falls_with_depth",
             f"Without BN the largest stable {what} falls with depth", no_bn),
            (f"bn_stable_{slug(what)}_flat_with_depth", f"With BN the largest stable {what} does not", bn)):
        if len(values) < 2:
            claims.append(judged(key, claim, paper, steps(values) or "-", NOT_JUDGED,
                                 unless or f"needs two depths or more, has {len(values)}"))
        elif values is no_bn:
            first, last = values.iloc[0], values.iloc[-1]
            falls = bool((values.diff().dropna() < 0).all()) and first / last >= 3
            claims.append(judged(key, claim, paper, f"depth {steps(values)}; {'≥ ' if first >= largest_size else ''}"
                                 f"{first / last:.3g}x from {values.index[0]} to {values.index[-1]}",
                                 holds(falls, partly=bool(first > last)), unless))
        else:
            claims.append(judged(key,
                                 claim, paper, steps(values), holds(bool(values.max() / values.min() <= 3)), unless))
    return claims


def plot_ladder(ax, table: pd.DataFrame, largest_size: float,
                ylabel: str = "largest step before the loss passes 10^3 x") -> None:
    """The stable step (or rate) against depth on log axes, with BN and without (one that never
    explodes within the sweep drawn at its largest, `largest_size`, as an open marker), and the
    paper's training rates (dotted)."""
    depths = table.index.to_numpy()
    for i, (name, label) in enumerate(NETWORKS.items()):
        values = table[f"{name}_median"].to_numpy(dtype=float)
        never = np.isinf(values) | (values >= largest_size)  # NaN: not measured, not drawn
        drawn = np.where(never, largest_size, np.where(values > 0, values, np.nan))  # 0: below the grid
        ax.plot(depths, drawn, "o-", color=f"C{i}", label=label)
        ax.plot(depths[never], drawn[never], "o", color="white", mec=f"C{i}", ms=7)
        ax.axhline(PAPER_RATES[name], color=f"C{i}", ls=":", lw=1, label=f"the paper's rate {label}")
    ax.set(xscale="log", yscale="log", xticks=depths, xticklabels=[str(d) for d in depths],
           xlabel="depth", ylabel=ylabel)
    ax.minorticks_off()


# ---- in training: the largest rate that does not diverge in the first 200 steps ----

LADDER_RATES = sweep_rates(2)  # 1e-5, 3e-5, ..., 0.3, 1: half-decade steps


@dataclass(frozen=True)
class Bisection:
    """The outcome of `bisect_stable`: `rate`, the largest stable rate of the grid (None: even the
    smallest diverges); `tried`, each rate tried and whether it diverged; `complete`, False when
    a run it needed is not (yet) in the store."""
    rate: float | None
    tried: dict[float, bool] = field(default_factory=dict)
    complete: bool = True


def bisect_stable(rates: tuple[float, ...], diverges: Callable[[float], bool | None]) -> Bisection:
    """The largest of the ascending `rates` at which `diverges(rate)` is False, by bisection: it
    assumes that a rate diverges if a smaller one does, and so tries about log2(len(rates) + 1)
    rates. `diverges` returning None (not known) stops the search, incomplete."""
    stable, diverging, tried = -1, len(rates), {}  # indices: largest known stable, smallest known diverging
    while diverging - stable > 1:
        mid = (stable + diverging) // 2
        outcome = diverges(rates[mid])
        if outcome is None:
            return Bisection(None, tried, complete=False)
        tried[rates[mid]] = outcome
        stable, diverging = (stable, mid) if outcome else (mid, diverging)
    return Bisection(rates[stable] if stable >= 0 else None, tried)


def ladder_training_config(preset: str, arch: str, bn: bool, lr: float):
    """The training probe of the ladder: `arch` at rate `lr` for its first 200 steps on the full
    training set at a constant rate (`shared.grids.divergence_config`)."""
    return divergence_config(preset, arch=arch, bn=bn, lr=lr)


def train_ladder(arch: str, bn: bool, seed: int, preset: str = "preview", ctx: RunContext | None = None,
                 compute: bool = True) -> Bisection:
    """`bisect_stable` over LADDER_RATES for one network and seed, each rate a stored training run
    (`shared.train.run_training` under `ctx`, resumable); with compute=False only what `ctx.store`
    holds."""
    ctx = ctx or RunContext(progress=False)

    def diverges(lr: float) -> bool | None:
        cfg = ladder_training_config(preset, arch, bn, lr)
        if compute:
            run = run_training(cfg, seed, TRAINING_EXPERIMENT, ctx)
        else:
            run = ctx.store.get(TRAINING_EXPERIMENT, cfg, seed)
        return None if run is None else run.result["status"] == "diverged"

    return bisect_stable(LADDER_RATES, diverges)


def training_runs(preset: str, archs=tuple(DEPTHS), store: Store | None = None) -> list[dict]:
    """Every stored run of the training ladder (any network, rate and seed), for provenance."""
    store = store or Store()
    return [r for arch in archs for bn in (False, True) for lr in LADDER_RATES
            for r in store.runs(TRAINING_EXPERIMENT, ladder_training_config(preset, arch, bn, lr))]


def training_ladder(preset: str, seeds=None, archs=tuple(DEPTHS), store: Store | None = None) -> pd.DataFrame:
    """Rows (depth, network, seed) of the stored bisections that have begun: the largest stable
    rate (0: below the grid's smallest; NaN: incomplete) and the rates tried ("x": diverged).
    `seeds`: None for every seed with a stored run of the ladder."""
    store = store or Store()
    if seeds is None:
        seeds = sorted({r.provenance["seed"] for r in training_runs(preset, archs, store)})
    rows = []
    for arch in archs:
        for name in NETWORKS:
            for seed in seeds:
                b = train_ladder(arch, name == "bn", seed, preset, RunContext(store), compute=False)
                if not b.tried:  # nothing stored for this network and seed
                    continue
                rows.append({"depth": DEPTHS[arch], "network": name, "seed": seed,
                             "stable rate": np.nan if not b.complete else b.rate or 0.0,
                             "tried": ", ".join(f"{r:g}{' x' if d else ''}" for r, d in sorted(b.tried.items()))})
    columns = ["depth", "network", "seed", "stable rate", "tried"]
    return pd.DataFrame(rows, columns=columns).set_index(columns[:3]).sort_index()


# ---- the figure's protocol (shared.figures.protocol): load -> tables -> claims ----

@dataclass(frozen=True)
class Runs:
    """The ladder's stored runs: at initialisation per depth, and the training bisections."""
    archs: list[str]                     # the ladder's networks, shallow to deep
    signal: dict[str, list[dict]]        # arch -> signal propagation runs
    ladder: dict[str, list[dict]]        # arch -> Fig 3 runs on mini-batch 1 (`ladder_config`)
    fig5: list[dict]                     # ResNet-110's Fig 5 runs of the signal runs' seeds (none without it)
    train_preset: str
    training: pd.DataFrame               # `training_ladder`: the stored bisections


def load(source: Source, archs=None, train_preset: str | None = None, train_archs=None,
         compute_training: bool = False) -> Runs:
    """The ladder of `archs` (None: the preset's PRESET_DEPTHS) at initialisation, computing
    `source.compute`'s missing runs, and the training ladder of `train_archs` (None: every depth)
    under `train_preset` (None: the CPU preview; smoke beside smoke), bisecting that seed's
    missing runs only if `compute_training` (about an hour a seed on a CPU)."""
    archs = list(archs or PRESET_DEPTHS[source.preset])
    signal, ladder = {}, {}
    for arch in archs:
        signal_cfg = signal_propagation.MEASUREMENT.config(source.preset, arch=arch)
        ladder_cfg = ladder_config(fig3.MEASUREMENT.config(source.preset), arch)
        signal[arch] = probe_runs(signal_propagation.MEASUREMENT, signal_cfg, source)
        ladder[arch] = probe_runs(fig3.MEASUREMENT, ladder_cfg, source)
    fig5 = config_runs(fig5_module.EXPERIMENT, fig5_module.MEASUREMENT.config(source.preset),
                       seeds=[r.provenance["seed"] for r in signal["resnet110"]]) if "resnet110" in archs else []
    train_preset = train_preset or training_preset(source.preset)
    train_archs = list(train_archs or DEPTHS)
    if compute_training and source.compute is not None:
        for arch in train_archs:
            for bn in (False, True):
                train_ladder(arch, bn, source.compute, train_preset, source.context)
    return Runs(archs, signal, ladder, fig5, train_preset, training_ladder(train_preset, source.seeds, train_archs))


@dataclass(frozen=True)
class Tables:
    spp: pd.DataFrame            # `spp_summary`: per depth and network
    relation: pd.DataFrame | None  # `fig5_relation` without BN and with (None without ResNet-110)
    ladder: pd.DataFrame         # `ladder_table` of the stable steps
    largest_size: float          # the sweep's largest step size
    train_preset: str
    training: pd.DataFrame       # `ladder_table` of the training ladder's stable rates


def tables(found: Runs) -> Tables:
    relation = pd.concat({net: fig5_relation(found.signal["resnet110"], found.fig5, net) for net in ("no_bn", "bn")},
                         axis=1) if found.fig5 else None
    largest = max(found.ladder[found.archs[0]][0].result["sizes"])
    return Tables(spp_summary(spp_frame(found.signal)), relation, ladder_table(stable_steps(found.ladder)), largest,
                  found.train_preset, ladder_table(found.training, "stable rate"))


def claims(t: Tables, preset: str) -> list[Claim]:
    """The ladder's claims at initialisation, then in training (judged on its own preset)."""
    return (ladder_claims(t.ladder, t.largest_size, preset)
            + ladder_claims(t.training, max(LADDER_RATES), t.train_preset, what="rate in training"))


def main(argv: list[str] | None = None) -> None:
    """Train the ladder's bisections into the results store, shallowest network first, e.g.
    `python -m shared.figures.depth --seeds 0 --archs resnet20 resnet32 resnet56 resnet110` (the
    `preview` preset, on which the stored ladder was trained)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--preset", default="preview", choices=list(TRAIN_PRESETS))
    parser.add_argument("--seeds", type=seed_arg, nargs="+", default=[0])
    parser.add_argument("--archs", nargs="+", default=list(DEPTHS))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    for arch in args.archs:
        check_choice("arch", arch, DEPTHS)
    for seed in args.seeds:
        for arch in args.archs:
            for bn in (False, True):
                start = time.perf_counter()
                b = train_ladder(arch, bn, seed, args.preset, RunContext(data_dir=args.data_dir))
                print(f"{arch} {'BN' if bn else 'no BN'} seed {seed}: largest stable rate {b.rate} "
                      f"(tried {b.tried}) in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
