"""What decides the escape from the plateau (shared.figures.escape): the order of leaving, its
concordance with the features' norm after epoch 1, the forecast and the claim's rule, on made-up runs."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.figures import escape, plateau
from shared.results import StoredRun


def run(arch: str, seed: int, accs: list[float], norms: list[float], bn: bool = False) -> StoredRun:
    """A stored truncated run with these test accuracies and features' norms per epoch."""
    metrics = [{"epoch": e + 1, "train_loss": 2.3, "test_loss": 2.3 - a, "test_acc": a,
                "health": {"features": {"norm": n, "input_share": 0.1}, "grad_norm": 1.0,
                           "logit_spread": {"across_images": a}, "dead_relu": {"stage3": 0.0}}}
               for e, (a, n) in enumerate(zip(accs, norms))]
    return StoredRun({"metrics": metrics}, {"config": {"arch": arch, "bn": bn, "precision": "fp32"}, "seed": seed,
                                         "duration_s": 60.0})


def rows(*runs: StoredRun):
    return escape.table(plateau.tables(plateau.Runs(list(runs))))


def series(seed: int, in_order: bool = True) -> list[StoredRun]:
    """A depth series: ResNet-32 left at epoch 2, ResNet-56 at 3, ResNet-20 at 6, ResNet-110 not in
    8 epochs; its features' norms after epoch 1 in that order (in_order) or reversed."""
    first = [10.0, 3.0, 1.5, 0.4] if in_order else [0.4, 1.5, 3.0, 10.0]
    return [run("resnet32", seed, [0.1, 0.3, 0.3], [first[0], 20, 30]),
            run("resnet56", seed, [0.1, 0.1, 0.3], [first[1], 8, 20]),
            run("resnet20", seed, [0.1] * 5 + [0.3], [first[2], 2, 3, 5, 9, 15]),
            run("resnet110", seed, [0.1] * 8, [first[3], 0.3, 0.3, 0.4, 0.8, 1.6, 3.2, 6.4])]


def test_a_run_still_on_the_plateau_is_later_only_than_the_runs_that_left_within_its_epochs():
    t = rows(run("resnet20", 0, [0.1, 0.1, 0.3], [1, 1, 1]), run("resnet32", 0, [0.1, 0.3], [2, 2]),
             run("resnet56", 0, [0.1] * 4, [3] * 4), run("resnet110", 0, [0.1] * 2, [4, 4]))
    r = {arch: t.loc[(arch, 0)] for arch, _ in t.index}
    assert escape.order(r["resnet20"], r["resnet32"]) == 1                  # left at 3, after 2
    assert escape.order(r["resnet56"], r["resnet20"]) == 1                  # 4 epochs on it; 20 left at 3
    assert escape.order(r["resnet20"], r["resnet56"]) == -1
    assert escape.order(r["resnet110"], r["resnet20"]) is None              # 2 epochs: unknown against 3
    assert escape.order(r["resnet110"], r["resnet32"]) == 1
    assert escape.order(r["resnet110"], r["resnet56"]) is None              # both still on it
    # norms 1, 2, 3, 4 (20, 32, 56, 110): 20 after 32 is in order (the smaller norm later); 56 after
    # 20 and after 32, and 110 after 32, are not (the larger norm later)
    assert escape.concordance(t) == (1, 4)


def test_the_table_reads_the_collapse_and_forecasts_a_run_still_on_the_plateau():
    t = rows(*series(0))
    assert list(t.index.get_level_values("arch")) == ["resnet20", "resnet32", "resnet56", "resnet110"]
    deep = t.loc[("resnet110", 0)]
    assert deep["lowest norm"] == 0.3 and deep["lowest at epoch"] == 2 and np.isnan(deep["left the plateau at epoch"])
    assert deep["growth per epoch"] == pytest.approx(2.0)  # 0.8 -> 6.4 over the last 3 epochs
    # the others left at norms 20, 20 and 15: from 6.4 doubling each epoch, 15 after 2 epochs, 20 after 2
    assert (deep["forecast, soonest"], deep["forecast, latest"]) == (10, 10)
    assert t.loc[("resnet20", 0), "norm when it left"] == 15 and np.isnan(t.loc[("resnet20", 0), "forecast, soonest"])
    flat = rows(run("resnet110", 0, [0.1] * 5, [1, 1, 0.9, 0.8, 0.7]), run("resnet20", 0, [0.3], [5]))
    assert np.isnan(flat.loc[("resnet110", 0), "forecast, soonest"])  # not growing: no forecast


def test_the_claim_is_judged_on_a_replication_only():
    one = escape.judge(rows(*series(0)), "cpu")[0]
    assert one.verdict == NOT_JUDGED and "has 1" in one.note and one.ours == "6 of 6 pairs in order"
    assert escape.judge(rows(*series(0), *series(1)), "cpu")[0].verdict == YES
    # a second seed whose runs have not left yet: the pairs across seeds are known, its own are not
    started = [run(arch, 1, [0.1], [norm]) for arch, norm in
               (("resnet20", 2.0), ("resnet32", 2.7), ("resnet56", 4.4), ("resnet110", 0.3))]
    waiting = escape.judge(rows(*series(0), *started), "cpu")[0]
    assert waiting.verdict == NOT_JUDGED and "has 1" in waiting.note and waiting.ours == "6 of 6 pairs in order"
    assert escape.judge(rows(*series(0, in_order=False), *series(1, in_order=False)), "cpu")[0].verdict == NO
    # one seed in order and one reversed: the cross-seed pairs decide; half or so agree
    mixed = escape.judge(rows(*series(0), *series(1, in_order=False)), "cpu")[0]
    assert mixed.verdict in (NO, PARTLY) and mixed.verdict != YES
    assert escape.judge(rows(*series(0), *series(1)), "smoke")[0].verdict == NOT_JUDGED
    assert escape.judge(escape.table(plateau.tables(plateau.Runs([]))), "cpu")[0].verdict == NOT_JUDGED


def test_runs_with_bn_are_left_out_and_the_findings_and_plot_name_each_run():
    t = plateau.tables(plateau.Runs([*series(0), run("resnet110", 0, [0.3] * 3, [9, 9, 9], bn=True)]))
    table = escape.table(t)
    assert len(table) == 4
    lines = escape.findings(table)
    assert lines[0].startswith("Seed 0, features' norm after epoch 1, smallest first: ResNet-110 0.4 (not within 8")
    assert lines[0].endswith("6 of 6 pairs whose order is known in the hypothesis's order.")
    assert "at epochs 10-10" in lines[-1]
    fig, axes = plt.subplots(1, 2)
    escape.plot(axes, table, t)
    assert len(axes[0].get_legend_handles_labels()[1]) == 5  # four runs and the band
    plt.close(fig)
