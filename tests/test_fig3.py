"""Fig 3's probe table, statistics and claims on small synthetic runs with known answers."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from shared.figures import fig3, relative_loss
from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.results import StoredRun

SIZES = [1e-4, 1e-3, 1e-2, 0.1, 1.0]
BATCHES = ["1", "4"]


def probe(ratios):
    finite = [(r, s) for r, s in zip(ratios, SIZES) if r is not None]
    best = min(finite) if finite else (None, None)
    return {"relative_loss": ratios, "best_relative_loss": best[0], "best_size": best[1]}


def result(bn=(0.9, 0.5, 0.8, 1.2, 2.0), no_bn=(0.5, 2e3, 2e7, None, None), scale=1.0):
    """The same curves on every mini-batch, multiplied by `scale` (None stays None)."""
    times = lambda curve: [None if v is None else v * scale for v in curve]
    return {"sizes": SIZES,
            "bn": {"lr": 0.1, "batches": {b: probe(times(bn)) for b in BATCHES}},
            "no_bn": {"lr": 1e-4, "batches": {b: probe(times(no_bn)) for b in BATCHES}}}


def runs(*results):
    return [StoredRun(r, {"seed": seed}) for seed, r in enumerate(results)]


def test_batches_are_the_stored_names():
    class Cfg:
        probe_batches = (1, 4, 7)
    assert relative_loss.batches(Cfg) == ["1", "4", "7"]


def test_curve_turns_none_into_nan():
    curve = relative_loss.curve(result(), "no_bn", "1")
    assert curve[:3].tolist() == [0.5, 2e3, 2e7] and np.isnan(curve[3:]).all()


def test_first_above_counts_a_non_finite_loss_as_exceeding():
    r = result()
    assert relative_loss.first_above(r, "no_bn", "1", 1e3) == 1e-3
    assert relative_loss.first_above(r, "no_bn", "1", 1e6) == 1e-2
    assert relative_loss.first_above(r, "no_bn", "1", 1e9) == 0.1  # the first None
    assert relative_loss.first_above(r, "bn", "1", 1e3) == math.inf


def test_probe_row_reads_the_range_up_to_the_papers_largest_step():
    bn = relative_loss.probe_row(result(), "bn", "4")
    assert bn["lr"] == 0.1 and bn["first s > 1e3"] == math.inf
    assert bn["best relative loss"] == 0.5 and bn["best s"] == 1e-3
    assert bn["max ratio, s ≤ 0.1"] == 1.2  # s = 0.1 included, s = 1 not
    assert bn["min ratio, s ≤ 0.1"] == 0.5
    no_bn = relative_loss.probe_row(result(), "no_bn", "1")
    assert no_bn["max ratio, s ≤ 0.1"] == math.inf and no_bn["min ratio, s ≤ 0.1"] == 0.5
    never = relative_loss.probe_row(result(no_bn=(None,) * 5), "no_bn", "1")
    assert never["best relative loss"] is None and np.isnan(never["best s"])


def test_probe_table_and_its_means_over_seeds():
    table = fig3.probe_table(runs(result(), result(scale=3.0)), BATCHES)
    assert table.index.names == ["network", "mini-batch", "seed"]
    assert table.index.tolist()[:3] == [("bn", 1, 0), ("bn", 1, 1), ("bn", 4, 0)]
    assert len(table) == 2 * 2 * 2
    means = fig3.batch_means(table)
    assert means.loc[("bn", 1), "best relative loss"] == pytest.approx(1.0)  # (0.5 + 1.5) / 2
    assert means.loc[("bn", 4), "max ratio, s ≤ 0.1"] == pytest.approx(2.4)  # (1.2 + 3.6) / 2
    # scaled by 3 the no-BN curve passes 1e3 at the same step, 1e6 at the same step too
    assert means.loc[("no_bn", 1), "first s > 1e3"] == pytest.approx(1e-3)


def test_y_floor_is_half_the_smallest_finite_ratio():
    floor = fig3.y_floor([result(), result(scale=0.1)], BATCHES)
    assert floor == {"bn": pytest.approx(0.025), "no_bn": pytest.approx(0.025)}


def test_within_allows_a_factor_2_and_partly_a_factor_10_or_some_inside():
    values = lambda *v: pd.Series(v, dtype=float)
    assert fig3.within(values(0.01, 0.2), 0.02, 0.1) == YES  # at the factor 2 borders
    assert fig3.within(values(0.005, 0.5), 0.02, 0.1) == PARTLY  # all within a factor 10
    assert fig3.within(values(0.05, 5.0), 0.02, 0.1) == PARTLY  # some inside
    assert fig3.within(values(0.001, 5.0), 0.02, 0.1) == NO
    assert fig3.within(values(math.inf), 0.02, 0.1) == NO


def test_by_batch_lists_the_range_over_seeds():
    values = pd.Series([0.0017, 0.002, 0.096, 0.096],
                       index=pd.MultiIndex.from_tuples([(1, 0), (1, 1), (4, 0), (4, 1)],
                                                       names=["mini-batch", "seed"]))
    assert fig3.by_batch(values) == "mini-batch 1: 0.0017..0.002, 4: 0.096"


def table(bn=None, no_bn=None):
    """A probe table of one seed and mini-batches 1 and 4; by default the paper's curves."""
    columns = {"bn": {"first s > 1e3": math.inf, "first s > 1e6": math.inf, "best relative loss": 0.7,
                      "best s": 0.05, "max ratio, s ≤ 0.1": 2.0, "min ratio, s ≤ 0.1": 0.7},
               "no_bn": {"first s > 1e3": 2.5e-3, "first s > 1e6": 4e-3, "best relative loss": 0.05,
                         "best s": 2e-4, "max ratio, s ≤ 0.1": math.inf, "min ratio, s ≤ 0.1": 0.05}}
    columns["bn"].update(bn or {})
    columns["no_bn"].update(no_bn or {})
    rows = [{"network": name, "mini-batch": batch, "seed": 0, "lr": 0.1 if name == "bn" else 1e-4,
             **{k: v[i] if isinstance(v, list) else v for k, v in columns[name].items()}}
            for name in columns for i, batch in enumerate((1, 4))]
    return pd.DataFrame(rows).set_index(["network", "mini-batch", "seed"]).sort_index()


def verdicts(t, preset="paper", largest=10 ** 0.5):
    return [c.verdict for c in fig3.judge(t, largest, 1, preset)]


def test_claims_hold_on_the_papers_curves():
    claims = fig3.judge(table(), 10 ** 0.5, 1, "paper")
    assert [c.verdict for c in claims] == [YES] * 7
    assert claims[0].ours == "never up to s = 10^0.5"
    assert claims[1].ours == "10^-0.15..10^0.30"
    assert claims[3].ours == "mini-batch 1: 0.0025, 4: 0.0025"
    assert claims[5].claim == "Without BN, mini-batch 1's curve dips near s = 2e-4"
    assert claims[5].ours == "best s = 0.0002..0.0002, ratio 0.05..0.05"
    assert claims[6].ours == "≥ 1.26e+03x (BN never passes 10^3 x in the sweep)"  # 10^0.5 / 2.5e-3


def test_claims_partly_and_no():
    # BN's range: yes within -0.3..0.6 decades, partly up to 1 decade at the top, else no
    assert verdicts(table(bn={"max ratio, s ≤ 0.1": 10 ** 0.8}))[1] == PARTLY
    assert verdicts(table(bn={"max ratio, s ≤ 0.1": 10 ** 1.1}))[1] == NO
    assert verdicts(table(bn={"min ratio, s ≤ 0.1": 10 ** -0.5}))[1] == PARTLY
    # no BN's first step past 1e3: partly when one mini-batch is inside, no when none is near
    assert verdicts(table(no_bn={"first s > 1e3": [2e-3, 0.1]}))[3] == PARTLY
    assert verdicts(table(no_bn={"first s > 1e3": [0.1, 0.2]}))[3] == NO
    # BN explodes at s = 0.05 on one mini-batch: the first claim fails, the ratio is 0.05 / 2.5e-3
    exploding = fig3.judge(table(bn={"first s > 1e3": [math.inf, 0.05]}), 10 ** 0.5, 1, "paper")
    assert exploding[0].verdict == NO and exploding[0].ours == "first at s = mini-batch 1: inf, 4: 0.05"
    assert exploding[6].verdict == YES and exploding[6].ours == "≥ 20x"
    assert verdicts(table(bn={"first s > 1e3": 0.02}))[6] == NO  # 8x
    assert verdicts(table(), largest=0.02)[6] == NO  # capped at the sweep's largest step


def test_claims_are_not_judged_for_the_smoke_preset():
    claims = fig3.judge(table(), 10 ** 0.5, 1, "smoke")
    assert {c.verdict for c in claims} == {NOT_JUDGED} and all("smoke" in c.note for c in claims)
    assert [c.ours for c in claims] == [c.ours for c in fig3.judge(table(), 10 ** 0.5, 1, "paper")]


def test_plots_draw_every_network_and_mini_batch():
    results = [result(), result(scale=2.0)]
    floor = fig3.y_floor(results, BATCHES)
    fig, axes = plt.subplots(2, 2)
    fig3.plot_relative_loss(axes, results[0], results[1:], BATCHES, floor)
    assert axes[0, 1].get_title() == "mini-batch 4" and len(axes[0, 0].lines) == 3  # 2 runs + lr
    fig, axes = plt.subplots(1, 2)
    fig3.plot_overlay(axes, results[0], results, BATCHES, floor)
    assert [ax.get_title() for ax in axes] == ["with BN", "w/o BN"]
    assert axes[1].get_ylim()[0] == pytest.approx(min(1e-2, *floor.values()))
    plt.close("all")


def batch47(no_bn):
    """A run probed at mini-batches 4 and 7, the same no-BN curve on both."""
    r = result(no_bn=no_bn)
    for name in fig3.NETWORKS:
        r[name]["batches"] = {b: r[name]["batches"]["1"] for b in ("4", "7")}
    return r


def test_ablation_configs_change_one_choice_each():
    from shared.experiments import experiment_config
    cfg = experiment_config("fig3_relative_loss")
    configs = fig3.ablation_configs(cfg)
    assert list(configs) == list(fig3.VARIANTS) and configs["gradient step, after the preceding steps (ours)"] is cfg
    init, update = configs["gradient step, at initialisation"], configs["optimiser's step, after the preceding steps"]
    assert (init.state, init.direction, init.probe_batches, init.sizes) == ("init", "gradient", (4, 7), 40)
    assert (update.state, update.direction) == ("trained", "update")
    smoke = fig3.ablation_configs(experiment_config("fig3_relative_loss", "smoke"))
    assert {c.sizes for c in smoke.values()} == {12}  # never more sizes than the preset's


def test_ablation_table_and_claims():
    ours, init, update = fig3.VARIANTS
    explosive = (0.5, 2e3, 2e7, None, None)  # passes 1e3 at s = 1e-3 (within 2 of 2e-3), 1e6 at 1e-2
    tame = (0.5, 0.6, 0.7, 2e3, None)        # passes 1e3 at s = 0.1
    runs_by_variant = {ours: runs(result(no_bn=tame), result(no_bn=tame)),
                       init: runs(batch47(explosive), batch47(explosive), batch47(tame)),
                       update: []}
    for name in fig3.NETWORKS:  # ours is probed at 1 and 4 in these synthetic runs: keep 4 and 7
        for r in runs_by_variant[ours]:
            r.result[name]["batches"]["7"] = r.result[name]["batches"]["4"]
    table = fig3.ablation_table(runs_by_variant)
    assert set(table.index.get_level_values("variant")) == {ours, init}  # no runs: no rows
    assert table.loc[(init, "no_bn", 4), "first s > 1e3"] == 1e-3  # median of 1e-3, 1e-3, 0.1
    assert table.loc[(init, "no_bn", 7), "seeds"] == 3
    assert table.loc[(ours, "no_bn", 7), "first s > 1e3"] == 0.1
    claims = fig3.ablation_claims(fig3.variant_probes(runs_by_variant), "paper")
    assert len(claims) == 1 and init in claims[0].claim  # ours has its own claims; update has no runs
    assert claims[0].verdict == PARTLY  # some seeds inside the paper's range, one far out
    assert claims[0].ours == "mini-batch 4: 0.001..0.1, 7: 0.001..0.1 (3 seed(s))"
    explosive_only = {init: runs(batch47(explosive))}
    assert fig3.ablation_claims(fig3.variant_probes(explosive_only), "paper")[0].verdict == YES
    assert fig3.ablation_claims(fig3.variant_probes(explosive_only), "smoke")[0].verdict == NOT_JUDGED


def test_plot_ablation_draws_every_seed_of_every_variant():
    ours, init, update = fig3.VARIANTS
    fig, axes = plt.subplots(1, 2)
    fig3.plot_ablation(axes, {init: runs(batch47((1, 2, 3, 4, 5)), batch47((1, 2, 3, 4, 5))),
                              update: runs(batch47((1, 2, 3, 4, 5)))})
    assert len(axes[0].lines) == 3 + 1 and axes[1].get_title() == "w/o BN, mini-batch 7"
    assert [t.get_text() for t in axes[0].legend().get_texts()] == [init, update]
    plt.close(fig)


def test_networks_table_medians_per_network():
    found = {"a": runs(result(), result(scale=3.0)), "b": []}
    table = fig3.networks_table(found, BATCHES)
    assert set(table.index.get_level_values("net")) == {"a"}
    assert table.loc[("a", "no_bn", 1), "first s > 1e3"] == 1e-3 and table.loc[("a", "no_bn", 1), "seeds"] == 2
