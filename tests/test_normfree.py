"""shared.figures.normfree (SkipInit and Fixup beside the plain ResNet-110, at initialisation) on synthetic runs."""

import math

import pytest

from shared.figures import normfree
from shared.figures.protocol import Source
from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from test_fig6 import LABELS, UNIFORM, confident, network
from shared.results import StoredRun

SIZES = [1e-4, 1e-3, 1e-2, 0.1, 1.0]


def fig5(stds: dict) -> dict:
    """name -> (log10 std at layer 6, at layer 102)."""
    return StoredRun({
        name: {"6": {"std": 10.0 ** a, "abs_mean": 1.0}, "102": {"std": 10.0 ** b, "abs_mean": 1.0},
               "110": {"std": 1.0, "abs_mean": 1.0}} for name, (a, b) in stds.items()}, {"seed": 0})


def fig3(firsts: dict) -> dict:
    """name -> index into SIZES of the first step past 10^3 (None: never)."""
    curve = lambda f: [2e3 if f is not None and i >= f else 1.0 for i in range(len(SIZES))]
    return StoredRun({"sizes": SIZES, **{
        name: {"batches": {"1": {"relative_loss": curve(f)}}} for name, f in firsts.items()}}, {"seed": 0})


def fig6(probs: dict) -> dict:
    return StoredRun({name: network(p, LABELS, [4] + [0] * 9) for name, p in probs.items()}, {"seed": 0})


def signal(growth: dict) -> dict:
    """name -> log10 variance growth per block, over 4 blocks from 10^0."""
    return StoredRun({
        name: {str(b): {"variance": 10.0 ** (g * (b - 1)), "mean_sq": 1.0, "branch_variance": 0.0} for b in range(1, 5)}
        for name, g in growth.items()}, {"seed": 0})


def found(plain, skip, fix):
    return {"plain_bn": [plain], "plain_no_bn": [plain], "skipinit": [skip], "fixup": [fix]}


def table(skip_growth=0.1, fix_step=None, skip_probs=UNIFORM):
    return normfree.at_init_table(
        found(fig5({"bn": (0, 0.3), "no_bn": (-1, 3)}), fig5({"no_bn": (0, skip_growth)}), fig5({"no_bn": (0, 0)})),
        found(fig6({"bn": UNIFORM, "no_bn": confident(0, LABELS)}), fig6({"no_bn": skip_probs}), fig6({"no_bn": UNIFORM})),
        found(fig3({"bn": None, "no_bn": 1}), fig3({"no_bn": 3}), fig3({"no_bn": fix_step})),
        found(signal({"bn": 0.01, "no_bn": 0.5}), signal({"no_bn": 0.0}), signal({"no_bn": 0.0})))


def test_at_init_table():
    t = table()
    assert list(t.index) == list(normfree.SCHEMES)
    assert t.loc["plain_no_bn", "Fig 5: growth (decades)"] == pytest.approx(4)
    assert t.loc["plain_bn", "Fig 5: log10 std, layer 102"] == pytest.approx(0.3)
    assert t.loc["plain_no_bn", "Fig 3: stable step"] == 1e-3 and math.isinf(t.loc["fixup", "Fig 3: stable step"])
    assert t.loc["plain_no_bn", "Fig 6: top p"] == pytest.approx(0.9)
    assert t.loc["plain_no_bn", "stream: growth per block (decades)"] == pytest.approx(0.5)
    assert t.loc["skipinit", "stream: log10 variance, last block"] == pytest.approx(0)
    assert list(normfree.shown(t).index) == ["ResNet-110 with BN", "ResNet-110 w/o BN", "SkipInit", "Fixup"]


def test_claims_of_the_schemes():
    claims = normfree.judge(table(), largest_size=1.0, preset="paper")
    assert [c.verdict for c in claims] == [YES] * 6
    assert claims[1].ours == "0.1; 100x the plain network's" and claims[4].ours.startswith("never within the sweep; 1e+03x")
    verdicts = [c.verdict for c in normfree.judge(table(skip_growth=2, skip_probs=confident(0, LABELS)), 1.0, "paper")]
    assert verdicts[0] == NO and verdicts[2] == NO
    assert normfree.judge(table(fix_step=2), 1.0, "paper")[4].verdict == YES  # 1e-2 / 1e-3 = 10x
    assert {c.verdict for c in normfree.judge(table(), 1.0, "smoke")} == {NOT_JUDGED}


def test_claims_partly_when_the_step_grows_less_than_tenfold():
    t = table()
    t.loc["skipinit", "Fig 3: stable step"] = 3e-3
    assert normfree.judge(t, 1.0, "paper")[1].verdict == PARTLY


def test_scheme_configs():
    cfg = normfree.scheme_config("fig3_relative_loss", "paper", "fixup")
    assert (cfg.residual, cfg.shortcut, cfg.probe_batches, cfg.sizes) == ("fixup", None, (1,), 40)
    skip = normfree.scheme_config("fig3_relative_loss", "smoke", "skipinit")
    assert (skip.residual, skip.shortcut, skip.sizes) == ("skipinit", None, 12)  # option A, written None
    assert normfree.scheme_config("fig5_depth_profile", "paper", "plain_no_bn").residual == "plain"
    assert list(normfree.scheme_runs("signal_propagation", Source("paper", [0]))) == list(normfree.SCHEMES)


def test_signal_frame_and_plot_steps_draw_every_scheme():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plain, skip = signal({"bn": 0.01, "no_bn": 0.5}), signal({"no_bn": 0.0})
    frame = normfree.signal_frame({"plain_bn": [plain], "plain_no_bn": [plain], "skipinit": [skip], "fixup": []})
    assert sorted(set(frame.index.get_level_values("network"))) == ["plain_bn", "plain_no_bn", "skipinit"]
    assert frame.loc[("plain_no_bn", 4, 0), "variance"] == pytest.approx(10 ** 1.5)
    fig, ax = plt.subplots()
    normfree.plot_steps(ax, found(fig3({"bn": None, "no_bn": 1}), fig3({"no_bn": 3}), fig3({"no_bn": None})))
    assert len(ax.lines) == 4 + 1
    plt.close(fig)


def test_training_table_and_claims():
    """Per (scheme, rate): diverged / failed to learn / trained by Fig 1's definitions; a scheme
    trains (yes), does not diverge but fails to learn (partly), diverges (no), or has no run
    (not judged)."""
    from test_fig1 import run
    runs = {(label, lr): [] for label in normfree.SCHEMES for lr in normfree.TRAINING_RATES}
    runs.update({("plain_no_bn", lr): [run(0, None), run(1, None)] for lr in normfree.TRAINING_RATES})
    runs[("skipinit", 0.1)] = [run(0, 0.4)]
    runs[("skipinit", 0.003)] = [run(0, 0.1)]  # completed, at chance: failed to learn
    runs[("fixup", 0.1)] = [run(0, None)]
    table = normfree.training_table(runs)
    assert normfree.shown(table).loc[("SkipInit", 0.1), "trained"] == 1  # as the notebook shows it
    assert table.loc[("skipinit", 0.1), "trained"] == 1 and table.loc[("skipinit", 0.1), "test acc"] == 0.4
    assert table.loc[("skipinit", 0.003), "failed to learn"] == 1
    assert table.loc[("fixup", 0.1), "diverged at step"] == 1 and table.loc[("fixup", 0.003), "seeds"] == 0
    claims = normfree.training_claims(table, "cpu")
    assert [c.verdict for c in claims] == [YES, PARTLY, NO, NOT_JUDGED]
    assert claims[0].ours == "1 of 1 seed(s) train, 0 diverge; test acc 0.4 (plain w/o BN: 2 of 2 diverge)"
    assert claims[0].note == "cpu preset, 1 seed(s): a preview, not the paper's schedule"  # labelled as such
    assert normfree.training_claims(table, "paper")[0].note == ""
    assert {c.verdict for c in normfree.training_claims(table, "smoke")} == {NOT_JUDGED}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2)
    normfree.plot_training(axes, runs)  # the schemes by their labels, the runs without a curve left out
    labels = {line.get_label() for ax in axes for line in ax.lines}
    assert "SkipInit, lr 0.1" in " ".join(labels) and not any("plain_no_bn" in label for label in labels)
    plt.close(fig)
    cfg = normfree.training_config("fixup", "cpu", 0.1)
    assert (cfg.residual, cfg.bn, cfg.lr, cfg.arch) == ("fixup", False, 0.1, "resnet110")
