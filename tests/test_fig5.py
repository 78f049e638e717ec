"""Fig 5's profile, growth statistics, comparison table and claims (shared.figures.fig5) on synthetic stored
runs whose log10 magnitudes are known lines."""

import math

import numpy as np
import pytest

from shared.figures import fig5
from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.results import StoredRun

LAYERS = (6, 18, 30, 42, 54, 66, 78, 90, 102, 110)
MEANS, STDS = "no_bn_abs_mean", "no_bn_std"


def run(seed: int, no_bn_means, no_bn_stds, bn=lambda k: 0.001 * k, offset: float = 0.0, layers=LAYERS) -> dict:
    """A stored run whose log10 magnitudes are the given functions of the layer, plus `offset`
    (with BN: both statistics follow `bn`, by default a slight rise, so that a line fits)."""
    def net(means, stds):
        return {str(k): {"abs_mean": 10.0 ** (means(k) + offset), "std": 10.0 ** (stds(k) + offset)}
                for k in layers}
    return StoredRun({"bn": net(bn, bn), "no_bn": net(no_bn_means, no_bn_stds)}, {"seed": seed})


def line(at_first: float, per_layer: float):
    return lambda k: at_first + per_layer * (k - LAYERS[0])


def two_seeds(means, stds, spread: float, bn=lambda k: 0.001 * k):
    """Two networks at log10 offsets -spread and +spread: their std over networks is spread·√2."""
    return [run(0, means, stds, bn, -spread), run(1, means, stds, bn, spread)]


def claims_of(runs, preset="paper"):
    logs = fig5.log_profile(runs)
    return fig5.judge(fig5.growth_table(logs), fig5.profile_stats(logs),
                       logs.index.get_level_values("seed").nunique(), preset)


def test_log_profile_is_log10_by_layer_and_seed():
    logs = fig5.log_profile([run(3, line(-1, 0.01), line(0, 0.02), bn=lambda k: 0.5)])
    assert list(logs.index.get_level_values("layer")) == list(LAYERS)
    assert logs.loc[(18, 3), MEANS] == pytest.approx(-1 + 0.12)
    assert logs.loc[(110, 3), STDS] == pytest.approx(0.02 * 104)
    assert logs.loc[(6, 3), "bn_std"] == pytest.approx(0.5)
    assert list(logs.columns) == list(fig5.CURVES) == list(fig5.SERIES)
    assert fig5.shown(logs).loc[(6, 3), "channel stds, with BN"] == pytest.approx(0.5)  # as the notebook shows it


def test_profile_stats_mean_and_std_over_seeds():
    profile = fig5.profile_stats(fig5.log_profile(two_seeds(line(1, 0), line(0, 0), spread=0.5)))
    assert profile.loc[42, (MEANS, "mean")] == pytest.approx(1)
    assert profile.loc[42, (MEANS, "std")] == pytest.approx(0.5 * math.sqrt(2))


def test_growth_of_lines_per_seed():
    # seed 0 rises 0.01 per layer, seed 1 0.03; the classifier's layer (110) is off the line
    runs = [run(0, lambda k: 0.01 * k if k < 110 else 0.0, line(0, 0)),
            run(1, lambda k: 0.03 * k if k < 110 else 0.0, line(0, 0))]
    g = fig5.growth(fig5.log_profile(runs), MEANS)
    assert g["slope / layer"] == pytest.approx(0.02)
    assert g["slope / 12 layers"] == pytest.approx(0.24)
    assert g["slope / 12 layers, std over seeds"] == pytest.approx(12 * 0.02 / math.sqrt(2))
    assert g["R2"] == pytest.approx(1)
    assert g["log at 6"] == pytest.approx(0.12) and g["log at 110"] == pytest.approx(0)
    assert g["first to last"] == pytest.approx(-0.12)
    assert g["max log"] == pytest.approx(0.02 * 102) and g["min log"] == pytest.approx(0)
    one = fig5.growth(fig5.log_profile(runs[:1]), MEANS)
    assert np.isnan(one["slope / 12 layers, std over seeds"])


def test_growth_table_has_a_row_per_series():
    table = fig5.growth_table(fig5.log_profile([run(0, line(0, 0.01), line(1, 0.02))]))
    assert list(table.index) == list(fig5.CURVES)
    assert table.loc[STDS, "slope / layer"] == pytest.approx(0.02)


def test_comparison_table_skips_schemes_without_runs():
    found = {("resnet110", "a"): two_seeds(line(-1, 0.02), line(-1, 0.01), 0.1, bn=line(-0.5, 0.01)),
             ("resnet110", "b"): [],
             ("resnet101", "a"): [run(0, line(0, -0.01), line(0, 0.005))]}
    table = fig5.comparison_table(found)
    assert list(table.index) == [("resnet110", "a"), ("resnet101", "a")]
    row = table.loc["resnet110", "a"]
    assert row["seeds"] == 2
    assert row["no_bn means: decades"] == pytest.approx(0.02 * 104)
    assert row["no_bn stds: decades"] == pytest.approx(0.01 * 104)
    assert row["no_bn stds: slope / 12 layers"] == pytest.approx(0.12)
    assert row["no_bn means: max log10"] == pytest.approx(-1 + 0.02 * 104)
    assert row["bn: min log10"] == pytest.approx(-0.5) and row["bn: max log10"] == pytest.approx(-0.5 + 1.04)


def test_claims_on_the_papers_lines_hold():
    # means -1.5 -> 3.5 (5 decades), stds 0.5 decade per 12 layers, BN near 0, networks 0.7 apart
    claims = claims_of(two_seeds(line(-1.5, 5 / 104), line(-1.3, 0.5 / 12), spread=0.5))
    assert [c.verdict for c in claims] == [YES] * 6
    assert claims[1].claim == "Without BN, channel means grow from layer 6 to 110"
    assert claims[1].ours == "-1.5 → 3.5 (5 decades)"
    assert claims[2].ours == "0.5 decade per 12 layers (0.042 per layer)"
    assert claims[4].ours == "0.71 .. 0.71 decades (mean 0.71, 2 networks)"
    assert claims[5].claim.startswith("At the top (layer 102)")


def test_claims_partly():
    # 2.5 decades, 0.2 decade per 12 layers, networks 0.35 apart; the gap at layer 102 is 1.4 decades
    claims = claims_of(two_seeds(line(-0.8, 2.5 / 104), line(-1, 0.2 / 12), spread=0.25))
    assert [c.verdict for c in claims] == [YES, PARTLY, PARTLY, YES, PARTLY, PARTLY]
    assert claims[5].ours == "1.4 decades"


def test_claims_no():
    # the means zigzag (not a line, and 1 decade in all), the stds barely grow, BN reaches 10^1.5,
    # the networks are 0.14 apart and the gap at layer 102 is below 1 decade
    zigzag = lambda k: (k // 12 % 2) * 1.0
    claims = claims_of(two_seeds(zigzag, line(0, 0.05 / 12), spread=0.1, bn=line(0, 1.5 / 104)))
    assert [c.verdict for c in claims] == [NO, NO, NO, NO, NO, NO]


def test_claims_are_not_judged_for_the_smoke_preset():
    claims = claims_of(two_seeds(line(-1.5, 5 / 104), line(-1.3, 0.5 / 12), spread=0.5), preset="smoke")
    assert all(c.verdict == NOT_JUDGED and "smoke" in c.note for c in claims)


def test_the_ln_reading_scales_every_log_by_ln10():
    runs = [run(3, line(-1, 0.01), line(0, 0.02), bn=lambda k: 0.5)]
    log10, ln = fig5.log_profile(runs), fig5.log_profile(runs, "ln")
    np.testing.assert_allclose(ln.to_numpy(), log10.to_numpy() * math.log(10))


def test_claims_under_the_ln_reading():
    # means grow 5 / ln(10) = 2.17 decades: 5 ln units, the paper's 5 under the ln reading
    runs = two_seeds(line(-1.5 / math.log(10), 5 / math.log(10) / 104), line(-1.3, 0.5 / 12 / math.log(10)),
                     spread=0.5 / math.log(10))
    logs = fig5.log_profile(runs, "ln")
    ln = fig5.judge(fig5.growth_table(logs), fig5.profile_stats(logs), 2, "paper", "ln")
    assert len(ln) == 5 and all(c.claim.startswith("(ln reading) ") for c in ln)  # no R² claim
    assert [c.verdict for c in ln] == [YES] * 5
    assert ln[0].ours == "-1.5 → 3.5 (5 ln units)" and ln[0].paper == "≈ -1.5 → 3.5 (≈ 5 ln units)"
    assert claims_of(runs)[1].verdict == PARTLY  # 2.2 decades under log10


def test_all_claims_add_the_ln_reading_and_the_channel0_error_bars():
    runs = two_seeds(line(-1.5, 5 / 104), line(-1.3, 0.5 / 12), spread=0.5)
    channel0 = two_seeds(line(-1.5, 5 / 104), line(-1.3, 0.5 / 12), spread=0.1)
    claims = fig5.all_claims(fig5.reading_logs(runs), fig5.reading_logs(channel0), "paper")
    assert len(claims) == 6 + 5 + 2
    assert [c.claim for c in claims[:6]] == [c.claim for c in claims_of(runs)]
    assert claims[-2].claim.startswith("(channel 0 only, the blog's way) Networks differ")
    assert claims[-1].claim.startswith("(ln reading, channel 0 only, the blog's way) Networks differ")
    assert claims[-2].verdict == NO and claims[-2].ours.startswith("0.14 .. 0.14 decades")
    assert len(fig5.all_claims(fig5.reading_logs(runs), fig5.reading_logs([]), "paper")) == 11


def test_spread_and_readings_tables():
    spread = fig5.spread_table(two_seeds(line(0, 0), line(0, 0), 0.5), two_seeds(line(0, 0), line(0, 0), 0.1))
    assert spread.loc[MEANS, "all channels"] == pytest.approx(0.5 * math.sqrt(2))
    assert spread.loc[MEANS, "channel 0"] == pytest.approx(0.1 * math.sqrt(2))
    assert list(fig5.spread_table(two_seeds(line(0, 0), line(0, 0), 0.5), []).columns) == ["all channels"]
    # a run on the paper's values read as log10: no gap under log10, a large one under ln
    from shared.paper import FIG5_LAYERS, FIG5_LOG
    on_paper = StoredRun({
        net: {str(k): {stat: 10.0 ** FIG5_LOG[net, stat][i] for (n, stat) in FIG5_LOG if n == net}
              for i, k in enumerate(FIG5_LAYERS)} for net in ("bn", "no_bn")}, {"seed": 0})
    table = fig5.readings_table([on_paper])
    assert list(table.columns) == ["ln", "log10"] and list(table.index) == list(fig5.CURVES)
    assert table["log10"].max() == pytest.approx(0, abs=1e-9) and table["ln"].min() > 0.1


def test_plot_readings_draws_ours_and_the_papers_values():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2)
    fig5.plot_readings(axes, two_seeds(line(0, 0.01), line(0, 0.01), 0.1))
    assert [ax.get_ylabel() for ax in axes] == ["log10 [magnitude]", "ln [magnitude]"]
    assert len(axes[0].lines) == 8  # 4 curves + 4 sets of the paper's markers
    plt.close(fig)


def test_channel0_config():
    from shared.experiments import experiment_config
    cfg = experiment_config("fig5_depth_profile")
    assert fig5.channel0_config(cfg).channels == "first" and cfg.channels == "all"
