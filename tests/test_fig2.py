"""Fig 2's tables, statistics and claims on small synthetic runs with known answers."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from shared.figures import fig2
from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.models import INITS
from shared.results import StoredRun


def network(std, max_abs=0.03, kurtosis=0.2, layer=55):
    return {"std": std, "max_abs": max_abs, "excess_kurtosis": kurtosis, "layer": layer,
            "counts": [1, 4, 1], "edges": [-max_abs, -max_abs / 3, max_abs / 3, max_abs]}


def run(seed, bn_std, no_bn_std, **no_bn):
    return StoredRun({"bn": network(bn_std), "no_bn": network(no_bn_std, **no_bn),
                       "scale_ratio": no_bn_std / bn_std}, {"seed": seed})


def mean(bn_max=0.03, bn_kurtosis=0.5, no_bn_kurtosis=20.0, ratio=100.0):
    return pd.Series({"bn max_abs": bn_max, "bn excess_kurtosis": bn_kurtosis,
                      "no_bn max_abs": 4.0, "no_bn excess_kurtosis": no_bn_kurtosis,
                      "no_bn/bn std": ratio})


def test_gradient_table_has_a_row_per_seed_and_every_statistic():
    table = fig2.gradient_table([run(3, 0.01, 1.0, kurtosis=9.0), run(5, 0.02, 4.0)])
    assert table.index.tolist() == [3, 5]
    assert table.columns.tolist() == ["bn std", "bn max_abs", "bn excess_kurtosis", "no_bn std",
                                      "no_bn max_abs", "no_bn excess_kurtosis", "no_bn/bn std"]
    assert table.loc[3, "no_bn excess_kurtosis"] == 9.0
    assert table["no_bn/bn std"].tolist() == pytest.approx([100.0, 200.0])


def test_seed_summary_is_the_mean_and_the_sample_std():
    table = fig2.gradient_table([run(0, 0.01, 1.0), run(1, 0.03, 3.0)])
    summary = fig2.seed_summary(table)
    assert summary.index.tolist() == ["mean", "std"]
    assert summary.loc["mean", "bn std"] == pytest.approx(0.02)
    assert summary.loc["std", "no_bn std"] == pytest.approx(math.sqrt(2))  # |1 - 3| / sqrt(2)
    assert summary.loc["std", "no_bn/bn std"] == pytest.approx(0.0)  # both 100


def test_init_comparison_averages_over_seeds_and_skips_configs_without_runs():
    found = {("resnet110", "a"): [run(0, 0.01, 1.0), run(1, 0.03, 9.0)], ("resnet110", "b"): [],
             ("resnet101", "a"): [run(0, 0.02, 0.001)]}
    compare = fig2.init_comparison(found)
    assert compare.index.tolist() == [("resnet110", "a"), ("resnet101", "a")]
    assert compare.loc[("resnet110", "a"), "seeds"] == 2
    assert compare.loc[("resnet110", "a"), "no_bn std"] == pytest.approx(5.0)
    assert compare.loc[("resnet110", "a"), "no_bn/bn std"] == pytest.approx(200.0)  # (100 + 300) / 2
    assert compare.loc[("resnet101", "a"), "no_bn/bn std"] == pytest.approx(0.05)


def test_closest_init_is_nearest_to_the_target_in_decades():
    compare = pd.DataFrame({"arch": ["r"] * 3 + ["s"], "init": ["a", "b", "c", "a"],
                            "no_bn/bn std": [1000.0, 20.0, 300.0, 100.0]}).set_index(["arch", "init"])
    assert fig2.closest_init(compare, "r") == "c"  # 0.48 decades, against 1 and 0.70
    assert fig2.closest_init(compare, "r", target=10) == "b"


def test_comparison_configs_cover_every_scheme_of_each_architecture_once():
    configs = fig2.comparison_configs("smoke", "resnet20")
    archs = list(dict.fromkeys(a for a, _ in configs))
    assert archs == ["resnet20", "resnet110", "resnet101"]
    assert len(configs) == 3 * len(INITS)
    assert all(c.arch == a and c.init == scheme for (a, scheme), c in configs.items())
    assert len(fig2.comparison_configs("smoke", "resnet110")) == 2 * len(INITS)


def test_plots_draw_a_histogram_per_network_and_scheme():
    result = run(0, 0.01, 1.0).result
    fig, axes = plt.subplots(1, 2)
    fig2.plot_histograms(axes, result)
    assert [ax.get_title() for ax in axes] == ["with BN", "w/o BN"]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes] == [("gradient", "counts")] * 2
    for ax, name in zip(axes, ("bn", "no_bn")):
        assert len(ax.collections) == 1 and not ax.patches  # seaborn's one filled step outline
        outline = ax.collections[0].get_paths()[0]
        edges, counts = result[name]["edges"], result[name]["counts"]
        assert outline.vertices[:, 0].min() == pytest.approx(edges[0])
        assert outline.vertices[:, 0].max() == pytest.approx(edges[-1])
        # the stored bins exactly: over each bin's centre the filled area reaches its stored count
        for a, b, count in zip(edges, edges[1:], counts):
            assert outline.contains_point(((a + b) / 2, 0.98 * count))
            assert not outline.contains_point(((a + b) / 2, 1.02 * count))
    fig, axes = plt.subplots(2, 2)
    fig2.plot_inits(axes, {"x": result, "y": result})
    assert [ax.get_title() for ax in axes.flat] == ["x\nwith BN", "y\nwith BN", "x\nw/o BN", "y\nw/o BN"]
    assert all(len(ax.collections) == 1 and ax.get_ylabel() == "" for ax in axes.flat)
    plt.close("all")


def test_claims_verdicts():
    verdicts = lambda m, preset="paper": [c.verdict for c in fig2.judge(m, preset)]
    assert verdicts(mean()) == [YES, YES, YES]
    assert verdicts(mean(ratio=518.0)) == [YES, YES, PARTLY]  # above 300, but above 10
    assert verdicts(mean(ratio=30.0)) == [YES, YES, YES] and verdicts(mean(ratio=300.0))[2] == YES
    assert verdicts(mean(ratio=10.0))[2] == NO and verdicts(mean(ratio=11.0))[2] == PARTLY
    assert verdicts(mean(bn_max=0.2, no_bn_kurtosis=2.0)) == [NO, NO, YES]
    assert verdicts(mean(bn_kurtosis=-3.5))[0] == NO
    assert verdicts(mean(ratio=math.nan))[2] == NO  # as the notebook judged a missing ratio


def test_claims_texts_and_the_smoke_preset():
    claims = fig2.judge(mean(bn_max=0.0371, bn_kurtosis=0.449, no_bn_kurtosis=19.42, ratio=517.6), "paper")
    assert [c.paper for c in claims] == ["max |g| ≈ 0.04", "tails to ±4 and beyond", "≈ 100x"]
    assert [c.ours for c in claims] == ["max |g| = 0.0371, excess kurtosis 0.45",
                                        "excess kurtosis 19.4, max |g| = 4", "518x (std ratio)"]
    smoke = fig2.judge(mean(), "smoke")
    assert {c.verdict for c in smoke} == {NOT_JUDGED} and all("smoke" in c.note for c in smoke)
    assert [c.ours for c in smoke] == [c.ours for c in fig2.judge(mean(), "paper")]
