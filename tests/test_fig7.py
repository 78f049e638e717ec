"""shared.figures.fig7 on synthetic runs: the large-N law against the quarter circle's closed form, the
tables' statistics, and the claims' verdicts at their borders."""

import math

import matplotlib
import numpy as np
import pytest

from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.figures import fig7
from shared.plotting import seed_count, seed_result

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from shared.results import StoredRun

LIMITS = {1: 2.0, 3: math.sqrt(4 ** 4 / 3 ** 3), 5: math.sqrt(6 ** 6 / 5 ** 5)}


def quarter_circle_cdf(s: float) -> float:
    """The singular values of one N x N Gaussian matrix, entries N(0, 1/N), as N grows: density
    sqrt(4 - s^2) / pi on [0, 2]."""
    return (s / 2 * math.sqrt(4 - s * s) + 2 * math.asin(s / 2)) / math.pi


def run(seed: int, values: dict[int, tuple[float, float, float]]) -> dict:
    """A stored run: per depth M, (max, median, fraction below 0.1), with the limit of M."""
    return StoredRun({str(m): {"max": mx, "limit": LIMITS[m], "median": med, "fraction_below_0.1": frac,
                                "edges": list(np.linspace(0, mx, 5)), "counts": [4, 3, 2, 1]}
                       for m, (mx, med, frac) in values.items()}, {"seed": seed})


def by_depth(maxes, medians, fractions, law_medians=None, law_fractions=None):
    """`fig7.depth_table` of one seed with these values per M = 1, 3, 5 (the law equal to them
    unless given)."""
    table = fig7.seed_table([run(0, {m: v for m, v in zip(LIMITS, zip(maxes, medians, fractions))})])
    theory = {m: {"median": med, "fraction_below_0.1": frac} for m, med, frac in
              zip(LIMITS, law_medians or medians, law_fractions or fractions)}
    return fig7.depth_table(table, theory)


# a table on which every claim holds: limits met, the spike and the spread growing, the law followed
GOOD = dict(maxes=list(LIMITS.values()), medians=[0.8, 0.4, 0.2], fractions=[0.06, 0.27, 0.41])


def verdicts(table, preset="paper"):
    return [c.verdict for c in fig7.judge(table, 1, preset)]


def test_law_of_one_matrix_is_the_quarter_circle():
    law = fig7.law(1)
    median = 1.0  # solve quarter_circle_cdf(median) = 0.5 by bisection
    low, high = 0.0, 2.0
    for _ in range(60):
        median = (low + high) / 2
        low, high = (median, high) if quarter_circle_cdf(median) < 0.5 else (low, median)
    assert law["median"] == pytest.approx(median, abs=1e-4)
    assert law["fraction_below_0.1"] == pytest.approx(quarter_circle_cdf(0.1), abs=1e-4)
    assert np.interp(1.0, law["s"], law["density"]) == pytest.approx(math.sqrt(3) / math.pi, rel=1e-4)
    assert law["s"].max() == pytest.approx(2.0, abs=1e-4)


@pytest.mark.parametrize("m", [3, 5])
def test_law_ends_at_the_limit_of_the_largest_value(m):
    law = fig7.law(m)
    assert law["s"].max() == pytest.approx(LIMITS[m], rel=1e-4)
    assert 0 < law["median"] < LIMITS[m] and 0 < law["fraction_below_0.1"] < 1


def test_seed_table_and_depth_table_statistics():
    runs = [run(1, {1: (2.2, 1.1, 0.1), 3: (3.0, 0.5, 0.3)}), run(0, {1: (1.8, 0.9, 0.3), 3: (3.2, 0.3, 0.2)})]
    table = fig7.seed_table(runs)
    assert list(table.index) == [(1, 0), (1, 1), (3, 0), (3, 1)]
    assert table.loc[(1, 1), "max / limit"] == pytest.approx(1.1)
    assert table.loc[(1, 1), "max / median"] == pytest.approx(2.0)
    assert table.loc[(3, 0), "max / median"] == pytest.approx(3.2 / 0.3)
    assert seed_count(table) == 2
    theory = {1: {"median": 1.0, "fraction_below_0.1": 0.25}, 3: {"median": 0.5, "fraction_below_0.1": 0.2}}
    summary = fig7.depth_table(table, theory)
    assert summary.loc[1, "max"] == pytest.approx(2.0)
    assert summary.loc[1, "max std"] == pytest.approx(0.4 / math.sqrt(2))  # sample std of two values
    assert summary.loc[3, "median"] == pytest.approx(0.4)
    assert summary.loc[1, "fraction < 0.1"] == pytest.approx(0.2)
    assert summary.loc[3, "median (law)"] == 0.5 and summary.loc[1, "fraction < 0.1 (law)"] == 0.25
    assert summary.loc[1, "max / median"] == pytest.approx(2.0)
    # the law's largest gap: fraction 0.2 vs 0.25 (0.05), median 0.4 vs 0.5 (relative 0.2)
    assert fig7.law_gap(summary) == pytest.approx(0.2)


def test_small_helpers():
    runs = [run(3, {1: (2, 1, 0.1), 5: (4, 0.2, 0.4)}), run(7, {1: (2, 1, 0.2), 5: (4, 0.2, 0.4)})]
    assert fig7.depths(runs) == [1, 5]
    assert seed_result(runs, 7)["1"]["fraction_below_0.1"] == 0.2
    assert fig7.listed([2, 3.0792, 3.8637]) == "2, 3.08, 3.86"
    assert fig7.listed([-0.1412, 0.33], 2) == "-0.14, 0.33"
    assert fig7.depth_name(3) == "three matrices" and fig7.depth_name(7) == "7 matrices"


def test_plots_draw_every_depth():
    shown = run(0, {1: (2, 1, 0.1), 3: (3, 0.4, 0.3), 5: (4, 0.2, 0.4)}).result
    theory = {m: {"s": np.linspace(0.01, 2, 5), "density": np.ones(5)} for m in LIMITS}
    fig, axes = plt.subplots(1, 3)
    fig7.plot_histograms(axes, shown, [1, 3, 5])
    assert [len(ax.patches) for ax in axes] == [3, 2, 1]
    fig7.plot_density_vs_theory(axes, shown, theory, [1, 3, 5], seed=0)
    assert axes[2].get_title() == "five matrices" and axes[0].get_yscale() == "log"
    plt.close(fig)


def test_claims_all_hold_on_the_limits_and_the_law():
    claims = fig7.judge(by_depth(**GOOD), 1, "paper")
    assert [c.verdict for c in claims] == [YES, YES, YES, YES]
    assert claims[0].paper == "2, 3.08, 3.86"
    assert claims[0].claim.endswith("(M = 1, 3, 5)")
    assert claims[0].ours == "2, 3.08, 3.86 (mean of 1 seeds; 0, 0, 0 % off)"


def test_largest_value_claim_yes_within_3_percent_partly_within_10():
    for scale, verdict in ((1.029, YES), (1.031, PARTLY), (0.92, PARTLY), (1.1, NO), (0.85, NO)):
        maxes = [LIMITS[1] * scale, LIMITS[3], LIMITS[5]]
        assert verdicts(by_depth(**{**GOOD, "maxes": maxes}))[0] == verdict, scale


def test_law_claim_yes_below_0_02_partly_below_0_1():
    for law_fraction, verdict in ((0.079, YES), (0.081, PARTLY), (0.159, PARTLY), (0.161, NO)):
        table = by_depth(**GOOD, law_fractions=[law_fraction, 0.27, 0.41])
        assert verdicts(table)[3] == verdict, law_fraction


def test_spike_and_spread_claims_fail_when_depth_does_not_grow_them():
    # the fraction below 0.1 grows but less than twice: no
    assert verdicts(by_depth(**{**GOOD, "fractions": [0.3, 0.35, 0.4]}))[1] == NO
    # the median grows with depth: the bulk does not shrink, no
    medians = [0.2, 0.4, 0.8]
    assert verdicts(by_depth(**{**GOOD, "medians": medians}, law_medians=medians))[2] == NO


def test_smoke_preset_is_not_judged():
    claims = fig7.judge(by_depth(**GOOD), 1, "smoke")
    assert {c.verdict for c in claims} == {NOT_JUDGED}
    assert all("smoke" in c.note for c in claims)
