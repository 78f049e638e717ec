"""Fig 1's and the sweep's tables and claims (shared.figures.fig1) on synthetic stored runs."""

import pytest

from shared.figures import divergence, fig1
from shared.figures import sweep as lrsweep
from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.config import TrainConfig, setting_name
from shared.results import StoredRun


def run(seed: int, test_acc: float | None, initial_loss: float = 2.5, train_loss: float = 1.0) -> dict:
    """A stored run as shared.train writes it: completed with a final test accuracy, or diverged."""
    if test_acc is None:
        result = {"status": "diverged", "metrics": [{"step_losses": [2.5, 1e9]}], "diverged_step": 1,
                  "diverged_trace": [2.5, 1e9], "initial_loss": initial_loss, "first_above_step": 1}
    else:
        result = {"status": "completed", "initial_loss": initial_loss, "epochs": 1, "first_above_step": None,
                  "diverged_step": None, "diverged_trace": [],
                  "metrics": [{"train_loss": train_loss, "train_acc": 0.5, "test_acc": test_acc,
                               "step_losses": [initial_loss, train_loss]}]}
    return StoredRun(result, {"seed": seed})


def finals_and_probes(acc: dict[str, float | None], probe_diverged: dict[float, int]):
    runs = {setting_name(TrainConfig(bn=bn, lr=lr)): [run(0, acc.get(setting_name(TrainConfig(bn=bn, lr=lr)), 0.5))]
            for bn, lr in ((True, 0.1), (True, 0.003), (True, 1e-4), (False, 1e-4), (False, 0.003), (False, 0.1))}
    probes = [(TrainConfig(bn=False, lr=lr), [run(s, None if s < n else 0.2) for s in range(3)])
              for lr, n in probe_diverged.items()]
    return fig1.final_table(runs), divergence.divergence_table(probes)


def test_fig1_claims_on_the_papers_numbers_hold_and_partial_divergence_is_partly():
    acc = dict(fig1.PAPER_TEST_ACC)
    acc.update({"no BN, lr 0.003": None, "no BN, lr 0.1": None})
    finals, probes = finals_and_probes(acc, {0.003: 1, 0.1: 3})
    claims = {c.claim: c for c in fig1.judge(finals, probes, "paper")}
    assert claims["Final test accuracy, BN lr 0.1"].verdict == YES
    assert claims["At the same small rate (1e-4), BN and no BN end about equal"].verdict == YES
    assert claims["BN's gain comes from the larger rate: BN 0.1 beats BN 1e-4"].verdict == YES
    assert claims["Without BN, rate 0.1 diverges"].verdict == YES  # 1 + 3 of 4 runs
    assert claims["Without BN, rate 0.003 diverges"].verdict == PARTLY  # 1 + 1 of 4 runs
    assert claims["Without BN, rate 0.003 diverges"].ours == "diverged: 1/1 in Fig 1's runs, 1/3 on the full training set"


def test_fig1_claims_say_no_and_not_judged_where_they_should():
    acc = {**fig1.PAPER_TEST_ACC, "BN, lr 0.1": 0.80, "no BN, lr 0.003": 0.4, "no BN, lr 0.1": 0.3}
    finals, probes = finals_and_probes(acc, {0.003: 0, 0.1: 0})
    claims = {c.claim: c for c in fig1.judge(finals, probes, "paper")}
    assert claims["Final test accuracy, BN lr 0.1"].verdict == NO
    assert claims["BN's gain comes from the larger rate: BN 0.1 beats BN 1e-4"].verdict == NO
    assert claims["Without BN, rate 0.1 diverges"].verdict == NO
    cpu = {c.claim: c for c in fig1.judge(finals, probes, "cpu")}
    assert cpu["Final test accuracy, BN lr 0.1"].verdict == NOT_JUDGED
    assert "needs the paper preset" in cpu["Final test accuracy, BN lr 0.1"].note
    assert cpu["Without BN, rate 0.1 diverges"].verdict == NO  # judged on a preview too
    assert all(c.verdict == NOT_JUDGED for c in fig1.judge(finals, probes, "smoke"))


def test_a_comparison_of_two_runs_near_chance_is_not_judged():
    # two networks that learned nothing "end about equal" and one "beats" the other by noise
    acc = {**fig1.PAPER_TEST_ACC, "BN, lr 0.1": 0.118, "BN, lr 0.0001": 0.101, "no BN, lr 0.0001": 0.100}
    finals, probes = finals_and_probes(acc, {0.003: 3, 0.1: 3})
    claims = {c.claim: c for c in fig1.judge(finals, probes, "paper")}
    for name in ("At the same small rate (1e-4), BN and no BN end about equal",
                 "BN's gain comes from the larger rate: BN 0.1 beats BN 1e-4"):
        assert claims[name].verdict == NOT_JUDGED
        assert claims[name].note == "both within 2 points of chance: nothing learned to compare"
    gain = claims["BN's gain comes from the larger rate: BN 0.1 beats BN 1e-4"]
    assert gain.ours == "+1.7 points (BN, lr 0.1 11.8%, BN, lr 0.0001 10.1%)"
    acc["BN, lr 0.1"] = 0.30  # one of them learned: the comparison means something
    finals, probes = finals_and_probes(acc, {0.003: 3, 0.1: 3})
    claims = {c.claim: c for c in fig1.judge(finals, probes, "paper")}
    assert claims["BN's gain comes from the larger rate: BN 0.1 beats BN 1e-4"].verdict == YES


def test_fig1_curves_take_the_papers_colours():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = {setting_name(TrainConfig(bn=bn, lr=lr)): [run(0, 0.5)]
            for bn, lr in ((True, 0.1), (True, 0.003), (True, 1e-4), (False, 1e-4))}
    fig, axes = plt.subplots(1, 2)
    fig1.plot_accuracy(axes, runs)
    colours = {line.get_label().split(" (")[0]: matplotlib.colors.to_hex(line.get_color())
               for line in axes[0].get_lines() if not line.get_label().startswith("_")}
    default = [matplotlib.colors.to_hex(f"C{i}") for i in range(4)]
    assert colours == {"BN, lr 0.003": default[0], "BN, lr 0.1": default[1],  # blue, orange
                       "BN, lr 0.0001": default[2], "no BN, lr 0.0001": default[3]}  # green, red
    plt.close(fig)


def sweep(no_bn_trains: list[float], bn_trains: list[float], rates=(1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)):
    runs = [(TrainConfig(bn=bn, lr=lr), [run(0, 0.4 if lr in trains else None)])
            for bn, trains in ((True, bn_trains), (False, no_bn_trains)) for lr in rates]
    return lrsweep.sweep_table(runs)


def test_sweep_claims_find_the_largest_rate_that_trains_and_the_divergence_boundary():
    table = sweep(no_bn_trains=[1e-5, 1e-4], bn_trains=[1e-5, 1e-4, 1e-3, 1e-2, 0.1])
    assert lrsweep.largest_training_rate(table, False) == 1e-4 and lrsweep.largest_training_rate(table, True) == 0.1
    assert lrsweep.largest_surviving_rate(table, False) == 1e-4 and lrsweep.largest_surviving_rate(table, True) == 0.1
    claims = lrsweep.judge(table, "paper")
    assert [c.verdict for c in claims] == [YES, YES, YES]
    assert claims[0].ours == "largest rate with no diverged run: 0.0001; above it 4 of 4 runs diverge"
    assert claims[2].ours == "largest rate that trains: 0.1; without BN no run diverges up to 0.0001"
    # a preview: the rate that trains without BN needs the full schedule; the rest is judged
    assert [c.verdict for c in lrsweep.judge(table, "cpu")] == [YES, NOT_JUDGED, YES]
    table = sweep(no_bn_trains=[1e-5, 1e-4, 1e-3, 1e-2], bn_trains=[1e-5, 1e-4, 1e-3, 1e-2])
    assert [c.verdict for c in lrsweep.judge(table, "paper")] == [NO, NO, NO]
    assert [c.verdict for c in lrsweep.judge(table, "smoke")] == [NOT_JUDGED] * 3


def test_sweep_claims_count_runs_that_fail_to_learn_as_surviving():
    """A run at chance has not diverged: nothing trains without BN, but nothing below 1e-3 diverges."""
    runs = [(TrainConfig(bn=False, lr=lr), [run(0, 0.1 if lr < 1e-3 else None)]) for lr in (1e-5, 1e-4, 1e-3, 0.1)]
    runs += [(TrainConfig(bn=True, lr=lr), [run(0, 0.1 if lr < 1e-3 else 0.4)]) for lr in (1e-5, 1e-4, 1e-3, 0.1)]
    table = lrsweep.sweep_table(runs)
    assert lrsweep.largest_training_rate(table, False) is None and lrsweep.largest_surviving_rate(table, False) == 1e-4
    claims = lrsweep.judge(table, "cpu")
    assert [c.verdict for c in claims] == [YES, NOT_JUDGED, YES] and claims[1].ours == "no rate trains"
    assert [c.verdict for c in lrsweep.judge(table, "paper")] == [YES, PARTLY, YES]


def test_sweep_boundary_a_decade_up_holds_in_part_only_if_nothing_above_about_1e_4_trains():
    """No BN survives 1e-3 at chance (as seed 0 does on the full data) and diverges at 1e-2 and
    above: the boundary is a decade high, but nothing above about 1e-4 trains, so partly; were
    the run at 1e-3 to train, no."""
    def table(acc_at_1e_3):
        accs = {1e-5: 0.1, 1e-4: 0.1, 1e-3: acc_at_1e_3, 1e-2: None, 0.1: None}
        runs = [(TrainConfig(bn=False, lr=lr), [run(0, acc)]) for lr, acc in accs.items()]
        return lrsweep.sweep_table(runs + [(TrainConfig(bn=True, lr=0.1), [run(0, 0.4)])])
    claim = lrsweep.judge(table(0.139), "cpu")[0]
    assert claim.verdict == PARTLY
    assert claim.ours == "largest rate with no diverged run: 0.001 (it fails to learn); above it 2 of 2 runs diverge"
    assert lrsweep.judge(table(0.4), "cpu")[0].verdict == NO


def test_sweep_claims_wait_for_the_missing_runs_they_rest_on():
    """Every claim rests on every run without BN; BN's largest rate that trains, besides, on BN's
    runs above it: a missing BN run below it cannot change it."""
    def verdicts(missing: list[tuple[bool, float]]):
        table = sweep(no_bn_trains=[1e-5, 1e-4], bn_trains=[1e-5, 1e-4, 1e-3, 1e-2, 0.1])
        for bn, lr in missing:
            table.loc[(table.bn == bn) & (table.lr == lr), ["seeds", "trained", "diverged"]] = 0
        return lrsweep.judge(table, "paper")
    assert [c.verdict for c in verdicts([])] == [YES, YES, YES]
    claims = verdicts([(False, 1.0)])
    assert {c.verdict for c in claims} == {NOT_JUDGED} and claims[0].note == "1 of the 6 runs it rests on not yet trained"
    assert [c.verdict for c in verdicts([(True, 1e-3), (True, 1e-5)])] == [YES, YES, YES]
    claims = verdicts([(True, 1e-3), (True, 1.0)])
    assert [c.verdict for c in claims] == [YES, YES, NOT_JUDGED]
    assert claims[2].note == "1 of the 7 runs it rests on not yet trained"


def test_the_ordering_claim_and_the_short_schedule_targets():
    """BN's rates in order (0.1 > 0.003 > 1e-4) on the means, per seed in the targets; diverged
    runs counted; the no-BN curve's largest gap to BN's at 1e-4."""
    names = [setting_name(TrainConfig(bn=bn, lr=lr)) for bn, lr in
             ((True, 0.1), (True, 0.003), (True, 1e-4), (False, 1e-4), (False, 0.003), (False, 0.1))]
    accs = {names[0]: (0.90, 0.86), names[1]: (0.85, 0.88), names[2]: (0.60, 0.62), names[3]: (0.10, 0.10),
            names[4]: (None, None), names[5]: (None, None)}
    runs = {n: [run(s, a) for s, a in enumerate(pair)] for n, pair in accs.items()}
    finals = fig1.final_table(runs)
    probes = divergence.divergence_table([])
    claims = {c.claim: c for c in fig1.judge(finals, probes, "cpu")}
    order = claims["With BN the larger rate gives the better network (0.1, 0.003, 1e-4 in that order)"]
    assert order.verdict == YES and order.ours == "0.1 88.0%, 0.003 86.5%, 1e-4 61.0%"
    t = fig1.targets(runs, finals)
    assert t.loc["BN at 0.1 reaches the target test accuracy", "met"] == True  # noqa: E712 (numpy bool)
    assert t.loc["BN: 0.1 above 0.003 above 1e-4, in every seed", "ours"] == "1 of 2 seeds"
    assert t.loc["BN: 0.1 above 0.003 above 1e-4, in every seed", "met"] == False  # noqa: E712
    assert t.loc["Without BN, 0.1 and 0.003 diverge", "ours"] == "4 of 4 runs"
    assert t.loc["Without BN at 1e-4 the curve tracks BN's at 1e-4", "ours"] == "largest gap 51.0%"
    del runs[names[1]]
    finals = fig1.final_table(runs)
    claims = {c.claim: c for c in fig1.judge(finals, probes, "cpu")}
    assert claims[order.claim].verdict == NOT_JUDGED and "BN, lr 0.003" in claims[order.claim].note
    assert claims[order.claim].ours == "0.1 88.0%, 0.003 not run, 1e-4 61.0%"  # what was run is shown


def test_the_findings_carry_the_stored_numbers_and_say_what_is_missing():
    names = [setting_name(TrainConfig(bn=bn, lr=lr)) for bn, lr in
             ((True, 0.1), (True, 0.003), (True, 1e-4), (False, 1e-4), (False, 0.003), (False, 0.1))]
    accs = {names[0]: (0.90, 0.86), names[1]: (0.85, 0.84), names[2]: (0.60, 0.62), names[3]: (0.55, 0.60),
            names[4]: (None, None), names[5]: (None, None)}
    runs = {n: [run(s, a) for s, a in enumerate(pair)] for n, pair in accs.items()}
    probes = divergence.divergence_table([(TrainConfig(bn=False, lr=lr), [run(s, None if s < n else 0.2) for s in range(3)])
                                    for lr, n in ((0.1, 3), (0.001, 2))])
    lines = fig1.findings(runs, fig1.final_table(runs), probes)
    assert lines[0] == "Without BN at 0.1: 5 of 5 runs diverged (at step 1)."  # 3 probes + 2 of Fig 1's runs
    assert lines[1] == ("Without BN at 0.001: 2 of 3 runs diverged (at step 1); 1 did not (median loss at "
                        "step 199: 1.00; a constant guess scores ln 10 = 2.30).")
    assert lines[2] == ("BN, lr 0.1: 88.0% test accuracy (50.0% train) after 1 epochs, mean of 2 seed(s), "
                        "the paper 93.2% after its full schedule.")
    assert "With BN, 0.1 > 0.003 > 1e-4 in final test accuracy: yes on the means, in 2 of 2 seed(s)." in lines
    assert lines[-1].startswith("At 1e-4 the test-accuracy curves with and without BN are at most 3.5% apart")
    del runs[names[1]]
    lines = fig1.findings(runs, fig1.final_table(runs), probes)
    assert "BN, lr 0.003: not trained yet." in lines and not any(line.startswith("With BN, 0.1 >") for line in lines)


def curve_run(seed: int, accs: list[float], rates=(0.1, 0.1, 0.01, 0.01)) -> dict:
    """A completed run whose test accuracy per epoch is `accs`, at the rate of `rates` per epoch."""
    metrics = [{"test_acc": a, "train_acc": a, "train_loss": 1.0, "lr": lr} for a, lr in zip(accs, rates)]
    return StoredRun({"status": "completed", "initial_loss": 2.5, "epochs": len(accs), "metrics": metrics}, {"seed": seed})


def test_the_crossing_of_bns_larger_rates_and_the_finals_per_seed():
    """0.003 leads until the drop (after epoch 2), 0.1 after it: the mean curves' numbers at epoch
    1, before the drop, the drop's lift for each, and at the end; then each seed's final accuracies."""
    runs = {"BN, lr 0.003": [curve_run(0, [0.3, 0.6, 0.62, 0.63]), curve_run(1, [0.5, 0.8, 0.84, 0.85])],
            "BN, lr 0.1": [curve_run(0, [0.1, 0.5, 0.8, 0.9]), curve_run(1, [0.1, 0.5, 0.7, 0.8])]}
    cross = fig1.crossing(runs)
    assert cross["drop_epoch"] == 3 and cross["first"] == pytest.approx((0.4, 0.1))
    assert cross["before_drop"] == pytest.approx((0.7, 0.5)) and cross["lift"] == pytest.approx((0.03, 0.25))
    assert cross["last"] == pytest.approx((0.74, 0.85))
    lines = fig1.findings(runs, fig1.final_table(runs), divergence.divergence_table([]))
    assert ("BN at 0.003 against 0.1 (mean curves of seed(s) 0, 1, which both completed): after epoch 1 40.0% against 10.0%; at epoch 2, before the "
            "first rate drop, 70.0% against 50.0%; the drop lifts them by +3.0 and +25.0 points; at the end "
            "74.0% against 85.0%.") in lines
    assert fig1.seed_finals(runs) == {0: {"BN, lr 0.1": 0.9, "BN, lr 0.003": 0.63}, 1: {"BN, lr 0.1": 0.8, "BN, lr 0.003": 0.85}}
    assert "Seed 1: BN, lr 0.1 80.0%, BN, lr 0.003 85.0%." in lines
    assert fig1.crossing({"BN, lr 0.1": runs["BN, lr 0.1"]}) is None  # nothing to cross
    unpaired = {**runs, "BN, lr 0.1": [runs["BN, lr 0.1"][0], curve_run(2, [0.9, 0.9, 0.9, 0.9])]}
    assert fig1.crossing(unpaired)["seeds"] == [0] and fig1.crossing(unpaired)["first"] == pytest.approx((0.3, 0.1))
    flat = {name: [curve_run(0, [0.1, 0.2], rates=(0.1, 0.1))] for name in runs}
    assert fig1.crossing(flat) is None  # no drop


def test_the_warmup_ablation_pairs_seeds_and_reads_the_epoch_before_the_drop():
    from shared.figures import warmup
    plain_rates, warm_rates = [0.1, 0.1, 0.1, 0.01], [0.01, 0.1, 0.1, 0.01]
    plain = [curve_run(0, [0.1, 0.3, 0.5, 0.7], plain_rates), curve_run(1, [0.2, 0.4, 0.6, 0.8], plain_rates)]
    warm = [curve_run(0, [0.3, 0.4, 0.6, 0.75], warm_rates), curve_run(2, [0.3, 0.4, 0.6, 0.9], warm_rates)]
    t = warmup.table(plain, warm)
    assert list(t.index) == [(0, warmup.PLAIN), (0, warmup.WARM), ("mean", warmup.PLAIN), ("mean", warmup.WARM)]
    assert list(t.columns) == ["test acc, epoch 1", "test acc, epoch 3", "final test acc", "final train acc"]
    assert t.loc[(0, warmup.WARM)].tolist() == pytest.approx([0.3, 0.6, 0.75, 0.75])
    assert warmup.findings(plain, warm) == [
        "Warm-up, seed 0: after epoch 1 30.0% against 10.0% without; at the end 75.0% against 70.0% (+5.0 points)."]
    assert warmup.before_drop([{"lr": 0.1}] * 3) == 2  # a constant rate: the last epoch
    assert warmup.table(plain, []).empty
    assert "no seed has both runs yet" in warmup.findings(plain, [])[0]
