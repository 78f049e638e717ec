"""shared.figures.table1 on synthetic runs: the tables' statistics with known answers, and the claims'
verdicts at their borders."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.figures import table1
from shared.plotting import seed_count

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from shared.results import StoredRun

BATCH = 64  # √B = 8


def run(seed: int, layers: dict[int, tuple[float, float]], entry: float | None = 2.0) -> dict:
    """A stored run: per layer (Σ|g_b| with BN, the same without), |Σ g_b| = 1 for both, so the
    ratio is Σ|g_b|; the entry-by-entry median `entry` (absent if None)."""
    def stats(value):
        out = {"sum_abs": value, "abs_sum": 1.0, "ratio": value}
        return out if entry is None else {**out, "entry_ratio_median": entry}
    return StoredRun({net: {str(k): stats(v[i]) for k, v in layers.items()}
                       for i, net in enumerate(("bn", "no_bn"))}, {"seed": seed})


def means_of(bn, no_bn, bn_entry=None, no_bn_entry=None) -> pd.DataFrame:
    """`table1.layer_means`'s table of one seed with these ratios per layer."""
    n = len(bn)
    columns = {("bn", "ratio"): bn, ("no_bn", "ratio"): no_bn,
               ("bn", "entry_ratio_median"): bn_entry or bn, ("no_bn", "entry_ratio_median"): no_bn_entry or no_bn,
               ("bn", "sum_abs"): [1.0] * n, ("no_bn", "sum_abs"): [1.0] * n}
    frame = pd.DataFrame(columns, index=pd.Index(range(2, 2 + 10 * n, 10), name="layer"))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


# no BN at 1, BN at 11 (about √B = 8: partly the paper's 100), entry by entry 50
GOOD = dict(bn=[10.0, 12.0], no_bn=[1.0, 1.2], bn_entry=[50.0, 50.0])


def verdicts(means, preset="paper"):
    return [c.verdict for c in table1.judge(means, 3, BATCH, preset)]


def test_contribution_table_means_stds_and_seed_ratios():
    runs = [run(1, {20: (12.0, 1.5), 2: (10.0, 1.0)}), run(0, {20: (16.0, 2.5), 2: (14.0, 1.0)}, entry=None)]
    long = table1.contribution_table(runs)
    assert list(long.index) == [(2, 0), (2, 1), (20, 0), (20, 1)]
    assert set(long.columns.get_level_values(0)) == {"bn", "no_bn"}
    assert long.loc[(2, 1), ("no_bn", "sum_abs")] == 1.0 and long.loc[(20, 1), ("bn", "ratio")] == 12.0
    assert math.isnan(long.loc[(2, 0), ("bn", "entry_ratio_median")])  # absent in seed 0's run
    assert seed_count(long) == 2
    means, stds = table1.layer_means(long), table1.layer_stds(long)
    assert means.loc[2, ("bn", "ratio")] == 12.0 and means.loc[20, ("no_bn", "ratio")] == 2.0
    assert means.loc[2, ("bn", "entry_ratio_median")] == 2.0  # the mean skips the missing one
    assert stds.loc[20, ("bn", "ratio")] == pytest.approx(4 / math.sqrt(2))  # sample std of 12, 16
    assert stds.loc[2, ("no_bn", "ratio")] == 0.0
    assert table1.shown(means).loc[2, ("with BN", "entry ratio (median)")] == 2.0  # as the notebook shows it
    ratios = table1.seed_ratios(long)
    assert list(ratios.columns) == ["with BN, seed 0", "with BN, seed 1", "w/o BN, seed 0", "w/o BN, seed 1"]
    assert ratios.loc[20, "w/o BN, seed 0"] == 2.5
    single = table1.layer_stds(table1.contribution_table([run(0, {2: (3.0, 1.0)})]))
    assert single.isna().all().all()  # one seed: no std


def test_random_sign_ratio_is_root_batch():
    assert table1.random_sign_ratio(128) == pytest.approx(8 * math.sqrt(2))
    assert table1.random_sign_ratio(BATCH) == 8


def test_plot_draws_both_networks_and_the_yardsticks():
    long = table1.contribution_table([run(0, {2: (10.0, 1.0), 20: (12.0, 1.1)}),
                                      run(1, {2: (11.0, 1.0), 20: (13.0, 1.2)})])
    fig, axes = plt.subplots(1, 3)
    table1.plot_contributions(axes, table1.layer_means(long), table1.layer_stds(long), 8.0)
    assert [len(ax.patches) for ax in axes] == [4, 4, 4]  # 2 layers x 2 bars each
    levels = {line.get_label(): line.get_ydata()[0] for line in axes[2].get_lines()
              if not line.get_label().startswith("_")}  # the yardsticks, not the error bars
    assert levels == {"paper ~100": 100.0, "√B = 8": 8.0, "1 (all agree)": 1}
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["2", "20"]
    plt.close(fig)


def test_claims_on_a_table_where_bn_is_about_root_batch():
    claims = table1.judge(means_of(**GOOD), 3, BATCH, "paper")
    assert [c.verdict for c in claims] == [YES, PARTLY, YES, YES, YES]  # BN at 11, not 100
    assert claims[0].ours == "ratio 1–1.2 over 2 layers (mean 1.1; 3 seeds)"
    assert claims[1].paper == "≈ 100x"
    assert claims[3].ours == "ratio 11 vs √B = 8"
    assert claims[2].ours == "2 of 2 layers; BN ratio / no-BN ratio 10–10"


def test_no_bn_claim_yes_below_2_partly_below_half_root_batch():
    for top, verdict in ((1.99, YES), (2.0, PARTLY), (3.99, PARTLY), (4.0, NO)):
        assert verdicts(means_of(**{**GOOD, "no_bn": [1.0, top]}))[0] == verdict, top


def test_bn_claim_yes_between_30_and_300_partly_above_3_times_no_bn():
    for bn, verdict in ((30.0, YES), (300.0, YES), (301.0, PARTLY), (29.0, PARTLY), (3.4, PARTLY), (3.2, NO)):
        assert verdicts(means_of(**{**GOOD, "bn": [bn, bn], "no_bn": [1.0, 1.2]}))[1] == verdict, bn


def test_every_layer_and_random_sign_claims():
    # one layer where BN's ratio is only 3 times no BN's: no
    assert verdicts(means_of(**{**GOOD, "bn": [3.0, 12.0]}))[2] == NO
    for bn, verdict in ((4.0, YES), (16.0, YES), (3.9, NO), (16.1, NO)):  # within a factor 2 of √B = 8
        assert verdicts(means_of(**{**GOOD, "bn": [bn, bn]}))[3] == verdict, bn


def test_entry_claim_yes_between_30_and_300_partly_above_the_ratio_of_averages_else_no():
    # GOOD's ratio of averages with BN is 11: an entry median below it is not "larger" at all
    for entry, verdict in ((30.0, YES), (300.0, YES), (29.9, PARTLY), (1000.0, PARTLY), (11.5, PARTLY),
                           (10.0, NO), (1.0, NO)):
        assert verdicts(means_of(**{**GOOD, "bn_entry": [entry, entry]}))[4] == verdict, entry


def test_smoke_preset_is_not_judged():
    claims = table1.judge(means_of(**GOOD), 1, BATCH, "smoke")
    assert {c.verdict for c in claims} == {NOT_JUDGED}
    assert all("smoke" in c.note for c in claims)


def test_missing_ratios_are_no_not_an_error():
    nan = [np.nan, np.nan]
    assert verdicts(means_of(bn=nan, no_bn=nan, bn_entry=nan)) == [NO, NO, NO, NO, NO]


def full_run(seed: int, bn: dict, no_bn: dict) -> dict:
    """A stored run with every statistic: per network, per layer a dict of the stored values."""
    return StoredRun({"bn": bn, "no_bn": no_bn}, {"seed": seed})


def stats(sum_abs, abs_sum, entries, median=1.0, mean=1.0, norm=1.0):
    return {"sum_abs": sum_abs, "abs_sum": abs_sum, "ratio": sum_abs / abs_sum, "entry_ratio_median": median,
            "entry_ratio_mean": mean, "norm_ratio": norm, "entries": entries}


def test_statistics_table_and_pooled_ratio():
    # two layers: 10 entries with ratio 10 / 1, 30 entries with 30 / 2; pooled (100 + 900) / (10 + 60)
    bn = {"2": stats(10.0, 1.0, 10, median=20, mean=120, norm=9), "20": stats(30.0, 2.0, 30, median=30, mean=80, norm=11)}
    no_bn = {"2": stats(1.0, 1.0, 10), "20": stats(1.5, 1.0, 30)}
    long = table1.contribution_table([full_run(0, bn, no_bn)])
    t = table1.statistics_table(long)
    assert list(t.index) == [*table1.STATISTICS, table1.POOLED]
    assert t.loc["ratio", ("bn", "mean")] == pytest.approx((10 + 15) / 2)
    assert t.loc["ratio", ("bn", "max")] == pytest.approx(15)
    assert t.loc["entry_ratio_mean", ("bn", "mean")] == pytest.approx(100)
    assert t.loc[table1.POOLED, ("bn", "mean")] == pytest.approx(1000 / 70)
    assert t.loc[table1.POOLED, ("no_bn", "mean")] == pytest.approx((10 + 45) / 40)
    shown = table1.shown_statistics(t)  # as the notebook shows it
    assert shown.loc["ratio of averages, layers pooled", "w/o BN: mean"] == t.loc[table1.POOLED, ("no_bn", "mean")]
    claim = table1.statistic_claim(t, "paper")
    assert claim.verdict == YES and claim.ours.endswith("fits: mean of entry ratios")
    assert "median of entry ratios 25 / 1" in claim.ours
    t.loc["entry_ratio_mean", ("no_bn", "mean")] = 5  # 100x with BN, 20x apart: partly
    partly = table1.statistic_claim(t, "paper")
    assert partly.verdict == PARTLY and partly.ours.endswith("≈100x with BN: mean of entry ratios")
    t.loc["entry_ratio_mean", ("no_bn", "mean")] = 20  # only 5x apart
    assert table1.statistic_claim(t, "paper").verdict == NO
    t.loc["entry_ratio_mean", ("bn", "mean")] = 20
    assert table1.statistic_claim(t, "paper").verdict == NO
    assert table1.statistic_claim(t, "smoke").verdict == NOT_JUDGED


def test_statistics_table_of_runs_stored_before_the_new_statistics():
    long = table1.contribution_table([run(0, {2: (10.0, 1.0)})])  # no mean, norm or entries stored
    t = table1.statistics_table(long)
    assert table1.POOLED not in t.index and np.isnan(t.loc["norm_ratio", ("bn", "mean")])
    assert t.loc["ratio", ("bn", "mean")] == pytest.approx(10)
