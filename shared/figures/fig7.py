"""Figure 7 (the paper's appendix on random matrix theory): singular values of products of random
matrices, from stored runs of `measure_singular_values` (below).

For each seed and product depth M (1, 3, 5) a run holds the largest, the median and the fraction
below 0.1 of the pooled singular values of products of M independent N x N Gaussian matrices with
entries N(0, 1/N), and a histogram over [0, largest]. The paper shows the histograms and states the
limit of the largest singular value, sqrt((M+1)^(M+1) / M^M); we add the exact large-N law of the
spectrum (Fuss-Catalan, `shared.probes.product_singular_value_law`) as a check beyond the paper.
The notebook `07_fig7_singular_values` calls these.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import probes
from ..claims import Claim, holds, judged, unjudged_reason
from ..config import check_fields, check_positive_fields
from ..plotting import seed_count
from ..probes import product_singular_value_law
from .protocol import Measurement, Source, probe_runs

EXPERIMENT = "fig7_singular_values"

# the limits of the largest singular value for M = 1, 3, 5, as the paper's appendix states them
PAPER_LIMITS = "2, 3.08, 3.86"
NAMES = {1: "one matrix", 3: "three matrices", 5: "five matrices"}


# ---- the measurement: its config, measure function and presets ----

@dataclass(frozen=True)
class SingularValueConfig:
    """Fig 7: singular values of products of Gaussian matrices (no network, no data)."""
    n: int = 1000
    depths: tuple[int, ...] = (1, 3, 5)
    samples: int = 4
    bins: int = 100

    def __post_init__(self):
        check_fields(self)
        check_positive_fields(self)


def measure_singular_values(cfg: SingularValueConfig, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for m in cfg.depths:
        values = torch.cat([probes.gaussian_product_singular_values(cfg.n, m, generator)
                            for _ in range(cfg.samples)])
        counts = torch.histc(values, cfg.bins, 0, values.max().item())
        result[str(m)] = {"max": values.max().item(), "limit": probes.largest_singular_value_limit(m),
                          "median": values.median().item(),
                          "fraction_below_0.1": (values < 0.1).double().mean().item(),
                          "edges": torch.linspace(0, values.max().item(), cfg.bins + 1).tolist(),
                          "counts": counts.long().tolist()}
    return result


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": SingularValueConfig(), "smoke": SingularValueConfig(n=64, samples=1)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure_singular_values, needs_data=False)


def depth_name(m: int) -> str:
    """A legend's name of the product of `m` matrices ("one matrix", ..., "7 matrices")."""
    return NAMES.get(m, f"{m} matrices")


def depths(runs: list[dict]) -> list[int]:
    """The product depths M a run holds, in its order."""
    return [int(m) for m in runs[0].result]


def law(m: int) -> dict:
    """The large-N law of a product of `m` matrices: singular values `s`, their `density`, and the
    `median` and `fraction_below_0.1` of its cumulative distribution."""
    s, density, cdf = product_singular_value_law(m)
    return {"s": s, "density": density, "median": np.interp(0.5, cdf, s),
            "fraction_below_0.1": np.interp(0.1, s, cdf)}


def seed_table(runs: list[dict]) -> pd.DataFrame:
    """Per (M, seed): the largest singular value, its limit and their ratio, the median, the
    fraction below 0.1 and the spread (largest / median)."""
    rows = [{"M": int(m), "seed": r.provenance["seed"], "max": v["max"], "limit": v["limit"],
             "max / limit": v["max"] / v["limit"], "median": v["median"],
             "fraction < 0.1": v["fraction_below_0.1"], "max / median": v["max"] / v["median"]}
            for r in runs for m, v in r.result.items()]
    return pd.DataFrame(rows).set_index(["M", "seed"]).sort_index()


def depth_table(table: pd.DataFrame, theory: dict[int, dict]) -> pd.DataFrame:
    """Per M: mean (and std) over the seeds of `seed_table`'s columns, beside the large-N law's
    median and fraction below 0.1 (`theory`: M -> `law(M)`)."""
    summary = table.groupby("M").agg(["mean", "std"])
    return pd.DataFrame({
        "max": summary["max", "mean"], "max std": summary["max", "std"], "limit": summary["limit", "mean"],
        "median": summary["median", "mean"], "median (law)": [theory[m]["median"] for m in summary.index],
        "fraction < 0.1": summary["fraction < 0.1", "mean"],
        "fraction < 0.1 std": summary["fraction < 0.1", "std"],
        "fraction < 0.1 (law)": [theory[m]["fraction_below_0.1"] for m in summary.index],
        "max / median": summary["max / median", "mean"]})


def law_gap(by_depth: pd.DataFrame) -> float:
    """The largest gap between the measurements and the large-N law: the fraction below 0.1
    (absolute) and the median (relative), over the depths."""
    return max((by_depth["fraction < 0.1"] - by_depth["fraction < 0.1 (law)"]).abs().max(),
               (by_depth["median"] / by_depth["median (law)"] - 1).abs().max())


def listed(values, digits: int = 3) -> str:
    """The values as "a, b, c" with `digits` significant digits."""
    return ", ".join(f"{v:.{digits}g}" for v in values)


def plot_histograms(axes, shown: dict, depths: list[int]) -> None:
    """The paper's layout for one run: all products (left), the first two (middle), the first
    (right); each product's histogram, and its limit of the largest value dashed."""
    for ax, ms in zip(axes, (depths, depths[:2], depths[:1])):
        for i, m in enumerate(ms):
            res = shown[str(m)]
            ax.stairs(res["counts"], np.array(res["edges"]), fill=True, alpha=0.5, color=f"C{i}",
                      label=depth_name(m))
            ax.axvline(res["limit"], color=f"C{i}", ls="--", lw=1)
        ax.set(xlabel="singular value", ylabel="counts")
        ax.legend()


def plot_density_vs_theory(axes, shown: dict, theory: dict[int, dict], depths: list[int], seed: int) -> None:
    """Per depth: the run's histogram as a density (log scale), the large-N law (black) and the
    limit of the largest value (dashed)."""
    for i, (ax, m) in enumerate(zip(axes, depths)):
        res = shown[str(m)]
        edges, counts = np.array(res["edges"]), np.array(res["counts"])
        ax.stairs(counts / (counts.sum() * np.diff(edges)), edges, fill=True, alpha=0.5, color=f"C{i}",
                  label=f"measured (seed {seed})")
        ax.plot(theory[m]["s"], theory[m]["density"], color="k", lw=1, label="large-N law")
        ax.axvline(res["limit"], color=f"C{i}", ls="--", lw=1)
        ax.set(yscale="log", ylim=(1e-3, 30), title=depth_name(m), xlabel="singular value")
    axes[0].set_ylabel("density")
    axes[0].legend(loc="upper right")


def judge(by_depth: pd.DataFrame, n_seeds: int, preset: str) -> list[Claim]:
    """Fig 7's claims from `depth_table`'s table: the largest value at its limit (yes within 3 %,
    partly within 10 %), the growing spike of tiny values, the stretching spectrum, and (our check)
    the large-N law (yes within 0.02, partly within 0.1). Not judged for the smoke preset."""
    unless = unjudged_reason(preset)
    ratio = by_depth["max"] / by_depth["limit"]
    off = (ratio - 1).abs().max()
    fractions, spread = by_depth["fraction < 0.1"], by_depth["max / median"]
    gap = law_gap(by_depth)
    return [
        judged("largest_singular_value_limit",
               f"The largest singular value tends to sqrt((M+1)^(M+1)/M^M) (M = {listed(by_depth.index)})",
               PAPER_LIMITS, f"{listed(by_depth['max'])} (mean of {n_seeds} seeds; "
               f"{listed(100 * (ratio - 1), 2)} % off)", holds(off < 0.03, partly=off < 0.1), unless),
        judged("tiny_values_pile_up",
               "Depth piles up tiny singular values (the spike at 0 grows with M)", "spike at 0 grows with M",
               f"fraction below 0.1: {listed(fractions)}",
               holds(fractions.is_monotonic_increasing and fractions.iloc[-1] > 2 * fractions.iloc[0]), unless),
        judged("spectrum_stretches", "Depth stretches the spectrum: a few large values, the bulk shrinking",
               "largest 2 → 3.86 while the bulk moves to 0", f"largest / median: {listed(spread)}",
               holds(spread.is_monotonic_increasing and by_depth["median"].is_monotonic_decreasing), unless),
        judged("fuss_catalan_law", "(our check) The spectra follow the large-N Fuss–Catalan law", "not in the paper",
               f"largest gap: {gap:.2g} (fraction below 0.1, absolute; median, relative)",
               holds(gap < 0.02, partly=gap < 0.1), unless),
    ]


# The figure's protocol (shared.figures.protocol): load -> tables -> claims.

@dataclass(frozen=True)
class Runs:
    cfg: SingularValueConfig
    runs: list[dict]  # one per seed


def load(source: Source) -> Runs:
    """The preset's runs (random matrices: no network, no data)."""
    cfg = MEASUREMENT.config(source.preset)
    return Runs(cfg, probe_runs(MEASUREMENT, cfg, source))


@dataclass(frozen=True)
class Tables:
    depths: list[int]            # the product depths M (`depths`)
    theory: dict[int, dict]      # M -> `law(M)`
    seeds: pd.DataFrame          # `seed_table`: per (M, seed)
    by_depth: pd.DataFrame       # `depth_table`: per M, beside the law


def tables(found: Runs) -> Tables:
    ms = depths(found.runs)
    theory = {m: law(m) for m in ms}
    by_seed = seed_table(found.runs)
    return Tables(ms, theory, by_seed, depth_table(by_seed, theory))


def claims(t: Tables, preset: str) -> list[Claim]:
    return judge(t.by_depth, seed_count(t.seeds), preset)
