"""shared.figures.depth (the depth ladder and signal propagation) on synthetic stored runs with known answers."""

import math

import matplotlib
import numpy as np
import pytest

from shared.figures import depth, signal_propagation
from shared.claims import NO, NOT_JUDGED, PARTLY, YES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from shared.results import StoredRun
from helpers import context

SIZES = [1e-4, 1e-3, 1e-2, 0.1, 1.0]


def fig3_run(seed: int, bn_first: int | None, no_bn_first: int) -> dict:
    """Mini-batch 1's curves passing 10^3 first at SIZES[first] (never for None)."""
    def curve(first):
        return [2e3 if first is not None and i >= first else 1.0 for i in range(len(SIZES))]
    return StoredRun({"sizes": SIZES, **{
        name: {"lr": 0.1, "batches": {"1": {"relative_loss": curve(first)}}}
        for name, first in (("bn", bn_first), ("no_bn", no_bn_first))}}, {"seed": seed})


def ladder(no_bn_firsts: dict, bn_first=None):
    steps = depth.stable_steps({arch: [fig3_run(s, bn_first, f) for s, f in enumerate(firsts)]
                                for arch, firsts in no_bn_firsts.items()})
    return depth.ladder_table(steps)


def test_ladder_table_medians_per_depth():
    table = ladder({"resnet20": [3, 3, 2], "resnet56": [2, 1, 1], "resnet110": [0, 0, 0]})
    assert list(table.index) == [20, 56, 110]
    assert table.loc[20, "no_bn_median"] == 0.1 and table.loc[56, "no_bn_median"] == 1e-3
    assert table.loc[110, "no_bn_seeds"] == 3 and math.isinf(table.loc[110, "bn_median"])
    assert list(depth.shown(table).columns) == ["w/o BN: median", "with BN: median", "w/o BN: seeds", "with BN: seeds"]


def test_ladder_claims():
    falling = ladder({"resnet20": [3], "resnet56": [2], "resnet110": [0]})
    claims = depth.ladder_claims(falling, largest_size=1.0, preset="paper")
    assert [c.verdict for c in claims] == [YES, YES]
    assert claims[0].ours == "depth 20: 0.1, 56: 0.01, 110: 0.0001; 1e+03x from 20 to 110"
    never = depth.ladder_claims(ladder({"resnet20": [None], "resnet110": [0]}), 1.0, "paper")[0]
    assert never.verdict == YES and never.ours == "depth 20: ≥ 1, 110: 0.0001; ≥ 1e+04x from 20 to 110"
    assert claims[1].ours == "20: ≥ 1, 56: ≥ 1, 110: ≥ 1"
    assert depth.ladder_claims(ladder({"resnet20": [3], "resnet56": [3], "resnet110": [2]}), 1.0, "paper")[0].verdict == PARTLY
    assert depth.ladder_claims(ladder({"resnet20": [1], "resnet110": [2]}), 1.0, "paper")[0].verdict == NO
    bn_falls = ladder({"resnet20": [3], "resnet110": [0]}, bn_first=0)
    assert depth.ladder_claims(bn_falls, 1.0, "paper")[1].verdict == YES  # 1e-4 at both depths
    assert {c.verdict for c in depth.ladder_claims(falling, 1.0, "smoke")} == {NOT_JUDGED}


def spp_run(seed: int, networks: dict) -> dict:
    """networks: name -> per-block variance growth factor (mean_sq = variance / 4, branch 1)."""
    return StoredRun({
        name: {str(b): {"mean_sq": g ** b / 4, "variance": g ** b, "branch_variance": 1.0} for b in range(1, 5)}
        for name, g in networks.items()}, {"seed": seed})


def test_spp_frame_labels_and_summary():
    frame = signal_propagation.spp_frame({"resnet110": [spp_run(0, {"bn": 1.0, "no_bn": 10.0}), spp_run(1, {"bn": 1.0, "no_bn": 10.0})],
                             "skipinit": [spp_run(0, {"no_bn": 1.0})]})
    assert set(frame.index.get_level_values("network")) == {"resnet110_bn", "resnet110_no_bn", "skipinit"}
    summary = signal_propagation.spp_summary(frame)
    assert summary.loc["resnet110_no_bn", ("variance", "per block")] == pytest.approx(1.0)
    assert summary.loc["resnet110_no_bn", ("variance", "log10 last")] == pytest.approx(4.0)
    assert summary.loc["skipinit", ("mean_sq", "log10 first")] == pytest.approx(-np.log10(4))
    shown = signal_propagation.shown_spp(summary, {**signal_propagation.SPP_LABELS, "skipinit": "SkipInit"})  # as the notebook shows it
    assert shown.loc["ResNet-110, w/o BN", "mean channel variance: per block"] == pytest.approx(1.0)
    assert shown.loc["SkipInit", "mean squared channel mean: log10 first"] == pytest.approx(-np.log10(4))
    only = signal_propagation.spp_frame({"resnet110": [spp_run(0, {"bn": 1.0, "no_bn": 10.0})]}, network="no_bn")
    assert set(only.index.get_level_values("network")) == {"resnet110"}
    fig, axes = plt.subplots(1, 2)
    signal_propagation.plot_spp(axes, frame)
    assert len(axes[0].lines) == 3 and axes[1].get_title() == "mean channel variance"
    assert [line.get_label() for line in axes[0].lines] == ["ResNet-110, with BN", "ResNet-110, w/o BN", "skipinit"]
    plt.close(fig)


def test_plot_ladder_marks_steps_that_never_explode():
    fig, ax = plt.subplots()
    depth.plot_ladder(ax, ladder({"resnet20": [3], "resnet110": [0]}), largest_size=1.0)
    assert len(ax.lines) == 2 * 3  # per network: the curve, the open markers, the paper's rate
    assert ax.get_xlabel() == "depth"
    plt.close(fig)


def test_ladder_config():
    from shared.experiments import experiment_config
    cfg = depth.ladder_config(experiment_config("fig3_relative_loss"), "resnet56")
    assert (cfg.arch, cfg.probe_batches, cfg.sizes) == ("resnet56", (1,), 40)


def test_fig5_relation_pairs_each_convolution_with_the_block_it_reads():
    spp = [StoredRun({"no_bn": {str(b): {"mean_sq": 10.0 ** (2 * b) * 0.5,
                                                                    "variance": 10.0 ** (2 * b) * 0.5}
                                                             for b in range(1, 60)}}, {"seed": 0})]
    fig5 = [StoredRun({"no_bn": {str(k): {"std": 10.0 ** (k // 2 - 1) * 2, "abs_mean": 1.0}
                                                             for k in (6, 18, 110)}}, {"seed": 0})]
    table = signal_propagation.fig5_relation(spp, fig5)
    assert list(table.index) == [6, 18] and list(table["reads block"]) == [2, 8]
    assert table.loc[18, "log10 RMS of the stream"] == pytest.approx(8)  # sqrt(10^16)
    assert table["difference"].to_numpy() == pytest.approx([np.log10(2)] * 2)


@pytest.mark.parametrize("boundary", [-1, 0, 3, 5, 9, 10])
def test_bisection_finds_the_largest_stable_rate_in_few_tries(boundary):
    """Rates above index `boundary` diverge (-1: all do; the last: none does); bisection finds the
    boundary for every position in at most ceil(log2(len + 1)) tries, each tried rate's outcome kept."""
    rates = depth.LADDER_RATES
    calls = []

    def diverges(rate):
        calls.append(rate)
        return rates.index(rate) > boundary

    b = depth.bisect_stable(rates, diverges)
    assert b.complete and b.rate == (rates[boundary] if boundary >= 0 else None)
    assert len(calls) <= math.ceil(math.log2(len(rates) + 1)) and len(set(calls)) == len(calls)
    assert b.tried == {r: rates.index(r) > boundary for r in calls}
    missing = depth.bisect_stable(rates, lambda r: None if r == calls[-1] else rates.index(r) > boundary)
    assert not missing.complete and missing.rate is None and calls[-1] not in missing.tried


def test_the_training_ladder_stores_its_runs_and_reads_them_back(tmp_path, monkeypatch, tiny_image_folder):
    """train_ladder trains each rate it tries as a stored run; training_ladder reads the same
    bisection back from the store without training; a network not yet trained reads incomplete."""
    from shared.results import Store

    monkeypatch.setattr("shared.paths.CHECKPOINT_ROOT", tmp_path / "ck")
    store = Store(tmp_path / "results")
    trained = depth.train_ladder("resnet20", False, 0, "smoke", context(store, tiny_image_folder))
    assert trained.complete and 1 <= len(trained.tried) <= 4
    stored = list((tmp_path / "results" / "training").glob("*/seed0/result.json"))
    assert len(stored) == len(trained.tried)
    read = depth.train_ladder("resnet20", False, 0, "smoke", context(store), compute=False)
    assert read == trained
    table = depth.training_ladder("smoke", [0], ["resnet20"], store=store)
    assert table.loc[(20, "no_bn", 0), "stable rate"] == (trained.rate or 0.0)
    assert (20, "bn", 0) not in table.index  # nothing stored: no row
    cfg = depth.ladder_training_config("smoke", "resnet20", False, 0.1)
    assert (cfg.steps_per_epoch, cfg.train_subset, cfg.lr_drops, cfg.lr) == (3, 200, (), 0.1)  # smoke: seconds
    assert depth.ladder_training_config("paper", "resnet20", False, 0.1).steps_per_epoch == 200


def test_the_training_ladder_feeds_the_same_table_claims_and_plot():
    """training_ladder's rows ("stable rate"; NaN: incomplete, left out; 1: the grid's largest,
    never diverged) go through ladder_table, ladder_claims(what=...) and plot_ladder."""
    import pandas as pd
    rows = [(20, "no_bn", 0, 0.3), (20, "bn", 0, 1.0), (56, "no_bn", 0, 0.01), (56, "bn", 0, 1.0),
            (110, "no_bn", 0, 3e-4), (110, "no_bn", 1, 1e-4), (110, "bn", 0, np.nan)]
    frame = pd.DataFrame(rows, columns=["depth", "network", "seed", "stable rate"]).set_index(
        ["depth", "network", "seed"])
    table = depth.ladder_table(frame, "stable rate")
    assert table.loc[110, "no_bn_median"] == pytest.approx(2e-4) and table.loc[110, "no_bn_seeds"] == 2
    assert math.isnan(table.loc[110, "bn_median"])
    claims = depth.ladder_claims(table, 1.0, "cpu", what="rate in training")  # each on its own depths
    assert claims[0].claim == "Without BN the largest stable rate in training falls with depth"
    assert claims[0].ours == "depth 20: 0.3, 56: 0.01, 110: 0.0002; 1.5e+03x from 20 to 110"
    assert [c.verdict for c in claims] == [YES, YES] and claims[1].ours == "20: ≥ 1, 56: ≥ 1"
    one = depth.ladder_claims(table.loc[[20]], 1.0, "cpu")
    assert [c.verdict for c in one] == [NOT_JUDGED] * 2 and one[0].note == "needs two depths or more, has 1"
    fig, ax = plt.subplots()
    depth.plot_ladder(ax, table, 1.0, ylabel="largest stable rate")
    assert ax.get_ylabel() == "largest stable rate"
    bn_open = ax.lines[1].get_xydata()  # the open markers of the BN curve: 20 and 56, not 110 (NaN)
    assert list(bn_open[:, 0]) == [20, 56]
    plt.close(fig)
