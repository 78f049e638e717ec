"""The truncated schedule's reading (shared.figures.plateau): the escape from the constant-guess
plateau, the depth fit, and the claims' rules, on made-up runs."""

import math
import warnings

import pytest

from shared.claims import NO, NOT_JUDGED, PARTLY, YES
from shared.figures import plateau
from shared.results import StoredRun


def run(arch: str, bn: bool, seed: int, accs: list[float], precision: str = "bf16") -> dict:
    """A stored run's record as the store returns it, with these test accuracies per epoch."""
    metrics = [{"epoch": e + 1, "train_loss": 2.3, "test_loss": 2.3 - a, "test_acc": a,
                "health": {"features": {"norm": 1.0, "input_share": 0.1 + a}, "grad_norm": 2.0,
                           "logit_spread": {"across_images": a}, "dead_relu": {"stage3": 0.0}}}
               for e, a in enumerate(accs)]
    return StoredRun({"metrics": metrics}, {"config": {"arch": arch, "bn": bn, "precision": precision}, "seed": seed,
                                         "duration_s": 3600.0})


def test_a_run_leaves_the_plateau_at_its_first_epoch_at_20_percent():
    assert plateau.escape_epoch(run("resnet20", False, 0, [0.1, 0.19, 0.2, 0.5]).result["metrics"]) == 3
    assert plateau.escape_epoch(run("resnet20", False, 0, [0.1, 0.1]).result["metrics"]) is None


def test_the_escape_epoch_is_fitted_against_depth_and_resnet110s_predicted():
    runs = [run("resnet20", False, 0, [0.1] * 1 + [0.3]), run("resnet32", False, 0, [0.1] * 3 + [0.3]),
            run("resnet56", False, 0, [0.1] * 7 + [0.3]), run("resnet110", False, 0, [0.1] * 10)]
    t = plateau.tables(plateau.Runs(runs))
    assert t.summary.loc[("resnet56", False, 0), "left the plateau at epoch"] == 8
    fit = t.fit
    assert fit["depths"] == [20, 32, 56] and fit["exponent"] > 1
    assert fit["low"] <= fit["resnet110"] <= fit["high"] and fit["resnet110"] > 8
    assert not any("does not grow with depth" in line for line in plateau.findings(t))
    shallow_late = [run("resnet20", False, 0, [0.1] * 5 + [0.3]), run("resnet32", False, 0, [0.1, 0.3]),
                    run("resnet56", False, 0, [0.1] * 2 + [0.3])]
    fit_line = plateau.findings(plateau.tables(plateau.Runs(shallow_late)))[-1]
    assert fit_line.endswith("but the escape epoch does not grow with depth over these depths, so the power law "
                             "describes none of them.")


def test_the_claims_rules(monkeypatch):
    flat = [0.1] * 10
    t = plateau.tables(plateau.Runs([run("resnet110", False, 0, flat)]))
    assert [c.verdict for c in plateau.judge(t, "cpu")] == [NOT_JUDGED, NOT_JUDGED]  # 10 of 60 epochs
    assert "10 of 60 epochs" in plateau.judge(t, "cpu")[0].ours
    t = plateau.tables(plateau.Runs([run("resnet110", False, 0, [0.1] * 60)]))
    assert plateau.judge(t, "cpu")[0].verdict == NO  # its whole budget on the plateau
    learns = [0.1, 0.15, 0.25, 0.4, 0.5, 0.55, 0.6, 0.62]
    for gap, verdict in ((0.02, YES), (0.08, PARTLY), (0.2, NO)):
        t = plateau.tables(plateau.Runs([run("resnet110", False, 0, learns),
                                         run("resnet110", True, 0, [a + gap for a in learns])]))
        left, track = plateau.judge(t, "cpu")
        assert left.verdict == YES and left.ours == "seed 0: epoch 3"
        assert track.verdict == verdict and track.ours.startswith(f"mean |test accuracy gap| {gap:.1%} over 6 epochs")
    assert {c.verdict for c in plateau.judge(t, "smoke")} == {NOT_JUDGED}


def test_findings_and_plots_read_every_run():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = plateau.tables(plateau.Runs([run("resnet110", False, 0, [0.1, 0.3]), run("resnet110", True, 0, [0.2, 0.5])]))
    lines = plateau.findings(t)
    assert "left the plateau at epoch 2" in lines[0] and f"ln 10 = {math.log(10):.4f}" in lines[0]
    fig, axes = plt.subplots(1, 2)
    plateau.plot(axes, t)
    fig, axes = plt.subplots(1, 4)
    plateau.plot_depths(axes, t)
    plt.close("all")
    series = plateau.tables(plateau.Runs([run("resnet20", False, s, [0.1, 0.3, 0.4][:3 - 2 * s]) for s in (0, 1)]
                                         + [run("resnet56", False, 0, [0.3] * 3)]))
    fig, axes = plt.subplots(1, 4)
    plateau.plot_depths(axes, series)
    lines = {line.get_label(): line for line in axes[0].get_lines() if line.get_label().startswith("ResNet")}
    first, second, deeper = (lines[f"ResNet-{d}, seed {s} (bf16)"] for d, s in ((20, 0), (20, 1), (56, 0)))
    assert first.get_color() == second.get_color() != deeper.get_color()  # a colour per depth
    assert (first.get_linestyle(), second.get_linestyle()) == ("-", "--") and second.get_marker() == "o"
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == list(lines)  # one legend, beside the panels
    plt.close("all")
    empty = plateau.tables(plateau.Runs([]))
    assert plateau.findings(empty)[0].startswith("No run")
    with warnings.catch_warnings():  # nothing stored: empty axes, no error, no legend warning
        warnings.simplefilter("error")
        plateau.plot(plt.subplots(1, 2)[1], empty)
        plateau.plot_depths(plt.subplots(1, 4)[1], empty)
    plt.close("all")


def test_a_run_on_the_plateau_says_how_its_loss_fell_lately():
    speeding = run("resnet110", False, 0, [0.10, 0.101, 0.103, 0.106, 0.110, 0.115, 0.121])  # drops 1, 2, ... 6e-3
    line, = plateau.findings(plateau.tables(plateau.Runs([speeding])))
    assert "fell by 0.0020, 0.0030, 0.0040, 0.0050, 0.0060 in its last 5 epochs: faster each epoch" in line
    uneven = run("resnet110", False, 0, [0.10, 0.104, 0.105, 0.109, 0.110, 0.115, 0.116])
    line, = plateau.findings(plateau.tables(plateau.Runs([uneven])))
    assert "in its last 5 epochs)" in line and "faster" not in line
    short, = plateau.findings(plateau.tables(plateau.Runs([run("resnet110", False, 0, [0.1, 0.1])])))
    assert "has not left the plateau." in short and "fell by" not in short


def test_two_depths_give_a_line_without_a_range_and_a_longer_resnet110_refutes_it():
    runs = [run("resnet32", False, 0, [0.1, 0.3]), run("resnet56", False, 0, [0.1, 0.1, 0.3]),
            run("resnet110", False, 0, [0.1] * 15)]
    t = plateau.tables(plateau.Runs(runs))
    assert t.fit["depths"] == [32, 56] and t.fit["low"] is None and t.fit["high"] is None
    assert t.fit["resnet110"] == pytest.approx(2 * (110 / 32) ** (math.log(1.5) / math.log(56 / 32)))
    lines = plateau.findings(t)
    assert "no range: two depths" in lines[-2]
    assert lines[-1] == ("ResNet-110 without BN has run without leaving for 15 epochs (seed 0): later than this fit "
                         "predicts, and than any shallower network left (the latest at epoch 3).")
    early = plateau.tables(plateau.Runs(runs[:2] + [run("resnet110", False, 0, [0.1] * 4)]))
    assert not plateau.findings(early)[-1].startswith("ResNet-110 without BN has run")  # not past the prediction


def test_runs_in_any_store_order_are_read_without_warnings():
    learns = [0.1, 0.15, 0.25, 0.4, 0.5, 0.55, 0.6, 0.62]
    runs = [run("resnet110", False, 0, learns), run("resnet56", False, 0, learns), run("resnet32", False, 0, learns),
            run("resnet110", True, 0, learns)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = plateau.tables(plateau.Runs(runs))
        plateau.findings(t)
        assert plateau.judge(t, "cpu")[1].verdict == YES


def test_each_seeds_longest_run_is_read_whatever_its_precision(monkeypatch, tmp_path):
    """A machine starts a run in its faster precision and a run keeps its own: seed 0 in bf16 (the
    cpu preset's) and seed 1 in fp32 are both read, each seed's longest run only."""
    from shared.config import TRAINING_EXPERIMENT
    from shared.figures.protocol import Source
    from shared.grids import start_config
    from shared.results import Store
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path)
    store = Store(tmp_path, tmp_path / "ck")
    runs = ((0, "bf16", 2), (0, "bf16", 3), (1, "fp32", 2), (1, "bf16", 1))
    for arch, (seed, precision, epochs) in [("resnet110", r) for r in runs] + [("resnet20", (0, "fp32", 2))]:
        cfg = start_config(arch, False, epochs, "cpu", precision=precision)
        stored = run(arch, False, seed, [0.1] * (epochs - 1) + [0.1 if arch == "resnet110" else 0.3], precision)
        record = {**stored.provenance, "config": {**stored.config, "epochs": epochs}, "config_hash": "-",
                  "git_commit": "-", "date": "-", "device": "cpu", "precision": precision, "data": {}}
        store.put(TRAINING_EXPERIMENT, cfg, seed, StoredRun(stored.result, record))
    found = plateau.longest(plateau.stored_runs("resnet110", False, Source("cpu")))
    assert [(r.seed, r.config["precision"], len(r.result["metrics"])) for r in found] == [(0, "bf16", 3), (1, "fp32", 2)]
    t = plateau.tables(plateau.load(Source("cpu")))
    assert list(t.summary.xs("resnet110", level="arch")["precision"]) == ["bf16", "fp32"]
    assert "seed 1 (fp32), 2 of 60 epochs" in " ".join(plateau.findings(t))
    # the precision A/B of the escape: seed 1 has a 1-epoch bf16 run beside its 2-epoch fp32 one
    assert list(t.precisions.index) == [("resnet110", False, 1, "bf16"), ("resnet110", False, 1, "fp32")]
    assert ("Precision and the escape, resnet110 without BN, seed 1: it left the plateau not within 1 epoch in "
            "bf16 and not within 2 epochs in fp32; test accuracy after epoch 1 10.00% and 10.00%.") in plateau.findings(t)
    brief = plateau.brief(Source("cpu"))  # by depth, each seed's longest run
    assert brief.index("resnet20 without BN, seed 0: left the plateau at epoch 2, 30.0% after 2 epochs") < brief.index(
        "resnet110 without BN, seed 0: not yet after 3 of 60 epochs (10.0%, test loss 2.2000)")
    assert "resnet110 without BN, seed 1: not yet after 2 of 60 epochs" in brief
