"""Fig 6's tables, statistics and claims on small synthetic runs with known answers."""

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.figures import fig6
from shared.figures.protocol import Source
from shared.plotting import seed_result
from shared.results import StoredRun


def gradients(probs, labels):
    """The gradients of the mean cross-entropy w.r.t. the logits: (p - onehot(label)) / B."""
    probs = np.asarray(probs, dtype=float)
    onehot = np.eye(probs.shape[1])[labels]
    return (probs - onehot) / len(probs)


def confident(column, labels, p=0.9, classes=10):
    """Every image gives probability `p` to `column`, the rest spread evenly."""
    probs = np.full((len(labels), classes), (1 - p) / (classes - 1))
    probs[:, column] = p
    return probs


def network(probs, labels, counts, column=None, fraction=1.0, epoch_fraction=1.0, batches=3):
    grads = gradients(probs, labels)
    column = int(np.bincount(grads.argmax(1)).argmax()) if column is None else column
    return {"first_batch": grads.tolist(), "epoch_mean": grads.tolist(), "dominant_column": column,
            "dominant_fraction": fraction, "epoch_column_counts": counts,
            "epoch_dominant_fraction": epoch_fraction, "epoch_batches": batches}


def run(seed, no_bn, bn):
    return StoredRun({"no_bn": no_bn, "bn": bn}, {"seed": seed})


LABELS = [1, 2, 3, 4]
UNIFORM = np.full((4, 10), 0.1)


def two_runs():
    one_column = [12] + [0] * 9
    spread = [3, 3, 3, 3, 0, 0, 0, 0, 0, 0]
    return [run(0, network(confident(0, LABELS), LABELS, one_column),
                network(UNIFORM, LABELS, spread, column=0, fraction=0.25, epoch_fraction=0.25)),
            run(7, network(confident(5, LABELS, p=0.6), LABELS, one_column, fraction=0.5),
                network(UNIFORM, LABELS, spread, column=0, fraction=0.25, epoch_fraction=0.25))]


def test_effective_columns_is_exp_of_the_entropy():
    assert fig6.effective_columns([7, 0, 0]) == pytest.approx(1.0)
    assert fig6.effective_columns([5, 5, 0, 0]) == pytest.approx(2.0)
    assert fig6.effective_columns([3] * 10) == pytest.approx(10.0)
    assert fig6.effective_columns([1, 3]) == pytest.approx(math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))


def test_probabilities_are_recovered_from_the_gradients():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=6)
    labels = [0, 3, 3, 9, 5, 1]
    assert fig6.probabilities(gradients(probs, labels)) == pytest.approx(probs)
    sure = np.zeros((2, 10))  # a sure and right prediction: every gradient 0, top p is 1
    assert fig6.probabilities(sure).max(1).tolist() == [1.0, 1.0]


def test_colour_limit_is_the_papers_range_for_128_images():
    assert fig6.colour_limit(128) == pytest.approx(0.00390625)
    assert fig6.colour_limit(16) == pytest.approx(0.03125)


def test_column_table_has_a_row_per_seed_and_the_statistics_of_both_networks():
    runs = two_runs()
    table = fig6.column_table(runs)
    assert table.index.tolist() == [0, 7]
    stats = ["column", "fraction", "epoch fraction", "epoch columns", "column gradient", "top-class share", "top p"]
    assert table.columns.tolist() == [f"{n} {s}" for n in ("no_bn", "bn") for s in stats]
    assert table.loc[0, "no_bn column"] == 0 and table.loc[7, "no_bn column"] == 5
    assert table.loc[7, "no_bn fraction"] == 0.5
    assert table.loc[0, "no_bn epoch columns"] == pytest.approx(1.0)
    assert table.loc[0, "bn epoch columns"] == pytest.approx(4.0)
    # no label is 0: the column's gradient is p / B = 0.9 / 4 for every image
    assert table.loc[0, "no_bn column gradient"] == pytest.approx(0.9 / 4)
    # uniform p: column 0's gradient is 0.1 / 4, the label's entry (argmin) is taken for the label
    assert table.loc[0, "bn column gradient"] == pytest.approx(0.1 / 4)
    assert table.loc[0, "no_bn top-class share"] == 1.0 and table.loc[7, "no_bn top p"] == pytest.approx(0.6)
    assert table.loc[0, "bn top p"] == pytest.approx(0.1)
    assert seed_result(runs, 7) is runs[1].result


def test_seed_summary_drops_the_column_indices_and_gives_mean_and_sample_std():
    summary = fig6.seed_summary(fig6.column_table(two_runs()))
    assert summary.index.tolist() == ["mean", "std"]
    assert "no_bn column" not in summary and "bn column" not in summary
    assert summary.loc["mean", "no_bn top p"] == pytest.approx(0.75)
    assert summary.loc["std", "no_bn top p"] == pytest.approx(0.3 / math.sqrt(2))  # |0.9 - 0.6| / sqrt(2)
    assert summary.loc["mean", "no_bn fraction"] == pytest.approx(0.75)


def test_plots_draw_the_heatmaps_and_a_line_per_seed():
    runs = two_runs()
    fig, axes = plt.subplots(2, 2)
    fig6.plot_heatmaps(fig, axes, runs[0].result, 0.004)
    assert [ax.get_title() for ax in axes.flat] == ["w/o BN, first mini-batch", "with BN, first mini-batch",
                                                    "w/o BN, mean over 3 mini-batches",
                                                    "with BN, mean over 3 mini-batches"]
    assert [cbar.get_ylabel() for cbar in fig.axes[4:]] == ["Gradient"] * 4  # a colour bar each
    for ax, key in zip(axes.flat, ("first_batch",) * 2 + ("epoch_mean",) * 2):
        mesh = ax.collections[0]  # seaborn's heatmap: one mesh of [images, classes] cells
        assert mesh.get_clim() == (-0.004, 0.004)
        assert mesh.get_array().shape == np.shape(runs[0].result["no_bn"][key])
        assert mesh.norm(0.0) == 0.5 and mesh.cmap(0.0)[2] > mesh.cmap(0.0)[0]  # centred at 0, blue below
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("Class activation", "Image in batch")
    assert np.array_equal(axes[1, 1].collections[0].get_array(), runs[0].result["bn"]["epoch_mean"])
    assert [t.get_text() for t in axes[0, 0].get_xticklabels()] == [str(c) for c in range(10)]
    fig, axes = plt.subplots(1, 2)
    fig6.plot_column_shares(axes, runs)
    assert [len(ax.lines) for ax in axes] == [2, 2]
    assert axes[1].lines[0].get_ydata().tolist() == [0.25] * 4 + [0.0] * 6
    plt.close("all")


def stats(no_bn_share=1.0, bn_share=0.2, bn_columns=4.0, no_bn_columns=1.2, bn_top_p=0.3,
          no_bn_top_p=0.97, no_bn_gradient=0.006, min_share=None):
    """A one-seed-summary: the table (two seeds) and its mean row."""
    mean = {"no_bn fraction": 0.8, "no_bn epoch fraction": 0.8, "no_bn epoch columns": no_bn_columns,
            "no_bn column gradient": no_bn_gradient, "no_bn top-class share": no_bn_share,
            "no_bn top p": no_bn_top_p, "bn fraction": 0.2, "bn epoch fraction": 0.2,
            "bn epoch columns": bn_columns, "bn column gradient": 0.001, "bn top-class share": bn_share,
            "bn top p": bn_top_p}
    table = pd.DataFrame({"no_bn top-class share": [no_bn_share if min_share is None else min_share,
                                                    no_bn_share]}, index=[0, 1])
    summary = pd.DataFrame([mean, {k: 0.0 for k in mean}], index=["mean", "std"])
    return table, summary


def verdicts(preset="paper", **kw):
    return [c.verdict for c in fig6.judge(*stats(**kw), preset)]


def test_claims_verdicts():
    assert verdicts() == [YES] * 5
    # the committed paper run: one class with BN too, faint
    assert verdicts(no_bn_share=0.93, bn_share=0.841, bn_columns=1.76, no_bn_columns=1.5, bn_top_p=0.495,
                    no_bn_top_p=0.975, no_bn_gradient=0.0064) == [YES, NO, YES, YES, YES]
    assert verdicts(no_bn_share=0.9)[0] == YES and verdicts(no_bn_share=0.89)[0] == PARTLY
    assert verdicts(no_bn_share=0.5)[0] == PARTLY and verdicts(no_bn_share=0.49)[0] == NO
    # spread with BN: both conditions; else partly if well below the no-BN share
    assert verdicts(bn_share=0.4, bn_columns=3.0)[1] == YES
    assert verdicts(bn_share=0.5)[1] == PARTLY and verdicts(bn_columns=2.9)[1] == PARTLY
    assert verdicts(bn_share=0.8)[1] == NO  # not below 1.0 - 0.2
    assert verdicts(no_bn_columns=3.0)[2] == YES
    assert verdicts(no_bn_columns=3.5)[2] == PARTLY and verdicts(no_bn_columns=4.0)[2] == NO
    assert verdicts(bn_top_p=0.5)[3] == YES and verdicts(bn_top_p=0.501)[3] == PARTLY
    assert verdicts(bn_top_p=0.7)[3] == PARTLY
    assert verdicts(bn_top_p=0.8)[3] == NO
    assert verdicts(no_bn_gradient=0.003)[4] == YES and verdicts(no_bn_gradient=0.001)[4] == PARTLY
    assert verdicts(no_bn_gradient=0.0)[4] == NO and verdicts(no_bn_gradient=-0.001)[4] == NO
    assert verdicts(no_bn_gradient=math.nan)[4] == NO  # as the notebook judged a missing value


def test_claims_texts_and_the_smoke_preset():
    kw = dict(no_bn_share=0.9302, bn_share=0.8406, bn_columns=1.7604, no_bn_columns=1.502, bn_top_p=0.4953,
              no_bn_top_p=0.9746, no_bn_gradient=0.006396, min_share=0.65625)
    claims = fig6.judge(*stats(**kw), "paper")
    assert [c.paper for c in claims] == ["≈ all 128 images", "spread over classes",
                                         "(blog: one, sometimes two or three columns)",
                                         "faint, well below the no-BN column's +0.004", "≈ +0.004 or more"]
    assert [c.ours for c in claims] == [
        "top-class share 0.93 (min over 2 seeds 0.656); dominant fraction 0.8",
        "top-class share 0.841, dominant fraction 0.2; 1.76 effective columns over the epoch average",
        "dominant fraction 0.8, 1.5 effective columns (with BN 0.2, 1.76)",
        # the number as the rule reads it, and the rule: 0.495 is below 0.5, shown so
        "top probability 0.495 with BN (faint: at most 0.5) vs 0.975 without; dominant column gradient 0.001 vs 0.0064",
        "0.0064 (mean over the batch; with BN 0.001)"]
    smoke = fig6.judge(*stats(**kw), "smoke")
    assert {c.verdict for c in smoke} == {NOT_JUDGED} and all("smoke" in c.note for c in smoke)
    assert [c.ours for c in smoke] == [c.ours for c in claims]


def test_claims_from_a_table_built_from_runs():
    table = fig6.column_table(two_runs())
    claims = fig6.judge(table, fig6.seed_summary(table), "paper")
    # no BN: one class for all, one column over the epoch, column gradient (0.225 + 0.15) / 2;
    # BN: uniform p (top p 0.1), 4 effective columns, top-class share 1 (argmax ties at column 0)
    assert [c.verdict for c in claims] == [YES, NO, YES, YES, YES]
    assert claims[4].ours == "0.19 (mean over the batch; with BN 0.025)"


def test_comparison_table_means_over_seeds_and_skips_networks_without_runs():
    table = fig6.comparison_table({"ours": two_runs(), "none": []})
    assert list(table.index) == ["ours"] and table.loc["ours", "seeds"] == 2
    assert table.loc["ours", "no_bn top p"] == pytest.approx((0.9 + 0.6) / 2)
    assert table.loc["ours", "no_bn top-class share"] == pytest.approx(1.0)
    assert table.loc["ours", "bn top p"] == pytest.approx(0.1)


def test_load_comparison_names_every_candidate_and_both_resnet101s():
    from shared.figures.candidates import candidates
    found = fig6.comparison_runs(Source("paper", (0,)))
    assert len(found) == len(candidates()) + 2
    assert "resnet101 conv kaiming_normal_fan_out | fc pytorch_default" in found


def test_a_networks_stats_are_typed_and_its_row_names_every_field():
    result = {"no_bn": network(confident(3, LABELS), LABELS, [0, 0, 0, 4] + [0] * 6)}
    row, stats = fig6.network_row(result, "no_bn"), fig6.network_stats(result, "no_bn")
    assert list(fig6.COLUMNS) == [f.name for f in dataclasses.fields(fig6.NetworkStats)]
    assert row["no_bn top-class share"] == stats.top_class_share and row["no_bn column"] == stats.column == 3
