"""Fig 4's tables, statistics and claims (shared.figures.fig4) on synthetic stored runs."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared.figures import fig4
from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.results import StoredRun

FRACTIONS = [0.0, 0.25, 0.5, 0.75, 1.0]
LAYERS = [8, 44, 80]
LR = 0.01


def layer(variances: list, means_end=(-1.0, 1.0)) -> dict:
    """A layer of two channels: channel 0's variance follows `variances` (one per fraction),
    channel 1's stays 0.1; the channel means are -0.5 and 0.5 until the last fraction."""
    means = [[-0.5, 0.5]] * (len(variances) - 1) + [list(means_end)]
    return {"means": means, "variances": [[v, 0.1] for v in variances]}


def run(seed: int, layers: dict, fractions=FRACTIONS) -> dict:
    return StoredRun({"fractions": list(fractions), "layers": {str(k): v for k, v in layers.items()}}, {"seed": seed})


def paper_like(var80_end: float = 5.5e16, var8_end: float = 1.0, var80_path=None) -> dict:
    """Layers on the paper's scale at 100 %: layer 80's variance reaches `var80_end` only then."""
    return {8: layer([0.5, 0.5, 0.5, 0.5, var8_end], (-0.5, 1.2)),
            44: layer([0.5, 0.5, 0.5, 1e3, 5e6], (-3500, 2500)),
            80: layer(var80_path or [0.5, 0.5, 0.5, 1e10, var80_end], (-3e8, 1e8))}


def claims_of(runs, preset="paper"):
    table = fig4.layer_table(runs, LAYERS)
    summary, spread = fig4.layer_summary(table), fig4.layer_spread(table)
    match = fig4.match_table(runs, LAYERS, LR, fig4.paper_scales(LAYERS))
    return {c.claim.split(":")[0]: c for c in fig4.judge(summary, spread, match, LAYERS, preset)}


def test_paper_scales_zip_the_papers_colour_bars_with_our_layers():
    scales = fig4.paper_scales([10, 20, 30])
    assert scales[10][1:] == (1.2, 1.0) and scales[20][1:] == (3.5e3, 5e6) and scales[30][1:] == (3e8, 5.5e16)
    assert scales[30][0] == "means ≈ -3e8..1e8, variances ≤ 5.5e16"


def test_high_and_low_treat_an_overflow_as_infinite():
    values = np.array([[1.0, 3.0], [2.0, np.nan]])
    assert fig4.high(values[0]) == 3.0 and fig4.low(values[0]) == 1.0
    assert fig4.high(values) == math.inf and fig4.low(values) == -math.inf
    assert list(fig4.high(values, axis=1)) == [3.0, math.inf]


def test_moments_read_none_as_nan():
    result = run(0, {8: {"means": [[1, None]], "variances": [[2, 3]]}}).result
    assert np.isnan(fig4.moments(result, 8, "means")[0, 1]) and fig4.moments(result, "8", "variances")[0, 1] == 3


def test_layer_row_growth_and_where_the_blow_up_becomes_visible():
    result = run(0, {8: layer([0.001, 0.001, 0.001, 2.0, 100.0], (-30.0, 50.0))}).result
    row = fig4.layer_row(result, 8)
    assert row["means min 0%"] == -0.5 and row["means max 0%"] == 0.5 and row["var max 0%"] == 0.1
    assert row["means min 100%"] == -30 and row["means max 100%"] == 50 and row["var max 100%"] == 100
    assert row["|mean| growth"] == pytest.approx(100)  # 50 / 0.5
    assert row["var growth"] == pytest.approx(1000)  # 100 / 0.1 (channel 1 is the largest at 0 %)
    assert row["visible from %"] == 75  # the first fraction at >= 1 % of 100


def test_layer_row_with_an_overflow_at_the_end():
    result = run(0, {8: layer([0.1, 0.2, 0.3, 0.4, None], (None, 5.0))}).result
    row = fig4.layer_row(result, 8)
    assert row["var max 100%"] == math.inf and row["means min 100%"] == -math.inf
    assert row["visible from %"] == 100  # only the overflowed fraction reaches 1 % of inf


def test_summary_is_the_median_over_seeds_and_spread_its_range():
    runs = [run(s, {8: layer([0.1, 0.1, 0.1, 0.1, v])}) for s, v in enumerate((1.0, 10.0, 1000.0))]
    table = fig4.layer_table(runs, [8])
    assert list(table.index) == [(0, 8), (1, 8), (2, 8)]
    assert fig4.layer_summary(table).loc[8, "var max 100%"] == 10
    spread = fig4.layer_spread(table)
    assert (spread.loc[8, ("var max 100%", "min")], spread.loc[8, ("var max 100%", "max")]) == (1, 1000)


def test_matching_fraction_rate_and_the_other_layers_there():
    result = run(0, paper_like(var80_path=[0.5, 0.5, 6e16, 7e16, 8e16])).result
    paper = fig4.paper_scales(LAYERS)
    assert fig4.matching_fraction(result, 80, 5.5e16) == 0.5
    assert np.isnan(fig4.matching_fraction(result, 80, 1e17))
    row = fig4.match_row(result, LAYERS, LR, paper)
    assert row["layer 44 fraction"] == 1.0 and row["layer 80 fraction"] == 0.5
    assert row["rate"] == pytest.approx(0.5 * LR)
    assert row["layer 8 var there"] == 0.5 and row["layer 44 var there"] == 0.5
    match = fig4.match_table([run(0, paper_like()), run(1, paper_like(var80_end=1e10))], LAYERS, LR, paper)
    assert match.loc[0, "layer 80 fraction"] == 1.0 and np.isnan(match.loc[1, "layer 80 fraction"])
    assert match.loc["median", "layer 80 fraction"] == 1.0  # the median skips NaN


def test_rows_until():
    assert fig4.rows_until(FRACTIONS, 0.5) == 3 and fig4.rows_until(FRACTIONS, 1.0) == 5


def test_heatmaps_a_panel_per_layer_and_moment_with_its_colour_bar_and_grey_overflow():
    result = run(0, paper_like()).result
    result["layers"]["80"]["means"][-1] = [None, 1.0]  # the forward pass overflowed at 100 %
    fig = fig4.heatmaps(result, LAYERS, len(FRACTIONS), "title")
    fig.canvas.draw()
    panels, bars = fig.axes[:6], fig.axes[6:]
    assert len(bars) == 6  # a colour bar each
    assert [ax.get_title() for ax in panels] == ["Layer 8", "Layer 44", "Layer 80", "", "", ""]
    assert [ax.get_ylabel() for ax in panels] == ["% of step", "", ""] * 2
    assert [ax.get_xlabel() for ax in panels] == ["", "", "", "channel", "channel", "channel"]
    assert "overflowed" in fig.get_suptitle()
    variances = panels[4].collections[0]  # layer 44's variances: seaborn's mesh, colours over its range
    assert variances.get_array().shape == (5, 2) and variances.get_clim() == (0.1, 5e6)
    means = panels[2].collections[0]  # layer 80's means, the overflowed cell masked and grey
    assert means.get_clim() == (-0.5, 1.0)
    assert np.ma.getmaskarray(means.get_array()).tolist() == [[False, False]] * 4 + [[True, False]]
    assert tuple(means.get_facecolors()[-2]) == (0.75, 0.75, 0.75, 1.0)
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["0", "20", "40", "60", "80", "100"]
    assert panels[0].get_yticks()[[0, -1]].tolist() == [0.5, 4.5]  # % of step on the rows' centres
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["0", "1"]
    matched = fig4.heatmaps(run(0, paper_like()).result, LAYERS, 3, "title")  # up to 50 %: the new 100 %
    assert matched.axes[0].collections[0].get_array().shape == (3, 2)
    assert matched.axes[0].get_yticks()[[0, -1]].tolist() == [0.5, 2.5]
    assert "overflowed" not in matched.get_suptitle()
    plt.close("all")


def test_same_scale_is_a_factor_10_for_yes_and_1000_for_partly():
    assert fig4.same_scale(10.0, 1.0) == YES and fig4.same_scale(0.1, 1.0) == YES
    assert fig4.same_scale(11.0, 1.0) == PARTLY and fig4.same_scale(1000.0, 1.0) == PARTLY
    assert fig4.same_scale(1001.0, 1.0) == NO and fig4.same_scale(math.inf, 1.0) == NO
    assert fig4.same_scale(math.nan, 1.0) == NOT_JUDGED  # no number: nothing to compare


def test_all_of():
    assert fig4.all_of([YES, YES]) == YES and fig4.all_of([YES, PARTLY]) == PARTLY
    assert fig4.all_of([PARTLY, NO]) == NO and fig4.all_of([NOT_JUDGED, NO]) == NO
    assert fig4.all_of([YES, NOT_JUDGED]) == NOT_JUDGED and fig4.all_of([PARTLY, NOT_JUDGED]) == NOT_JUDGED


def test_claims_on_the_papers_scale_hold():
    claims = claims_of([run(0, paper_like()), run(1, paper_like())])
    assert [c.verdict for c in claims.values()] == [YES] * 6
    layer80 = claims["Layer 80 at 100 % of the step"]
    assert layer80.ours == "median over 2 seed(s): means -3e+08..1e+08, variances ≤ 5.5e+16 (per seed 5.5e+16..5.5e+16)"
    assert claims["The blow-up happens late in the step"].ours.endswith("from 100 % of the step")
    assert claims["One rate gives the paper's scale in every layer"].ours == (
        "at rate ≈ 0.01: layer 8: ≤ 1, layer 44: ≤ 5e+06")


def test_claims_partly_and_no():
    # layer 80's variance 100x below the paper's: partly; layer 8's 2000x above: no; layer 8 then
    # grows more than layer 44, and layer 80 never reaches the paper's variance
    partly = claims_of([run(0, paper_like(var80_end=5.5e14))])
    assert partly["Layer 80 at 100 % of the step"].verdict == PARTLY
    assert partly["One rate gives the paper's scale in every layer"].verdict == NO
    assert partly["One rate gives the paper's scale in every layer"].ours == (
        "no rate: layer 80 does not reach the paper's variance within the update")
    no = claims_of([run(0, paper_like(var8_end=2e7, var80_path=[0.5, 0.5, 1e15, 1e16, 2e16]))])
    assert no["Layer 8 at 100 % of the step"].verdict == NO
    assert no["Deeper layers blow up more"].verdict == NO
    assert no["The blow-up happens late in the step"].verdict == NO  # visible from 50 %
    assert no["Layer 44 at 100 % of the step"].verdict == YES


def test_a_nan_moment_is_not_judged_with_its_reason_not_a_no():
    # (an overflow is read as infinite, far past the scale: no; a NaN in the table is a number missing)
    runs = [run(0, paper_like())]
    table = fig4.layer_table(runs, LAYERS)
    summary, spread = fig4.layer_summary(table), fig4.layer_spread(table)
    summary.loc[80, "var max 100%"] = math.nan
    match = fig4.match_table(runs, LAYERS, LR, fig4.paper_scales(LAYERS))
    claims = {c.claim.split(":")[0]: c for c in fig4.judge(summary, spread, match, LAYERS, "paper")}
    layer80 = claims["Layer 80 at 100 % of the step"]
    assert layer80.verdict == NOT_JUDGED and layer80.note == fig4.NAN_NOTE
    assert claims["Layer 8 at 100 % of the step"].verdict == YES and claims["Layer 8 at 100 % of the step"].note == ""


def test_claims_are_not_judged_for_the_smoke_preset():
    claims = claims_of([run(0, paper_like())], preset="smoke")
    assert all(c.verdict == NOT_JUDGED and "smoke" in c.note for c in claims.values())
