"""The benchmark scripts run end to end in their small CPU modes (their numbers are not claims)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import get_or_compute, put

REPO = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, **env: str) -> None:
    subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO, check=True,
                   env={**os.environ, **env}, capture_output=True, text=True)


def test_train_speed_smoke_writes_a_table_with_ratios(tmp_path):
    run_script("train_speed.py", "--preset", "smoke", "--out", str(tmp_path / "speed.json"), "--profile")
    report = json.loads((tmp_path / "speed.json").read_text())
    ops = report["profile"]["networks"]["resnet20 BN"]["ours-bf16"]
    # which convolution kernels run depends on the CPU's instruction set (bf16 without bf16 units
    # takes aten::_slow_conv2d_*), so only that some convolution op is among them
    assert any("conv" in o["op"] for o in ops)
    assert 0 < sum(o["share"] for o in ops) <= 1
    rows = {r["pipeline"]: r for r in report["rows"]}
    assert list(rows) == ["blog", "blog-2w", "ours", "ours-nchw", "ours-bf16", "ours-x2"]
    assert rows["blog"]["speedup_vs_blog"] == 1.0 and rows["ours-x2"]["runs"] == 2
    assert rows["ours-nchw"]["ratio_vs_fp32_nchw"] == rows["ours-nchw"]["epoch_ratio_vs_fp32_nchw"] == 1.0
    assert [r["precision"] for r in rows.values()] == ["fp32"] * 4 + ["bf16", "fp32"]
    assert [r["epoch_measured"] for r in rows.values()] == [False] * 4 + [True, False]
    assert all(r["s_per_epoch"] > 0 and r["s_per_step"] > 0 and r["train_images_per_s"] > 0 for r in rows.values())
    assert report["device"].startswith("cpu") and report["bench"]["batch_size"] == 32
    assert set(report["cpu"]) == {"model", "bf16_units", "threads"} and set(report["matmul_tflop_per_s"]) == {"fp32", "bf16"}


def test_precision_ab_pairs_each_run_with_its_other_precision(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import precision_ab
    from shared.config import TRAINING_EXPERIMENT
    from shared.results import Store

    store = Store(tmp_path / "results", tmp_path / "ck")
    cfgs = {p: precision_ab.divergence_configs(p)[0] for p in precision_ab.PRECISIONS}

    def put_pair(precision, seed, status, step, above):
        result = {"status": status, "diverged_step": step, "first_above_step": above, "metrics": []}
        put(store, TRAINING_EXPERIMENT, cfgs[precision], seed, result, "cpu", 1.0, "test")

    put_pair("fp32", 0, "diverged", 5, 0)
    put_pair("bf16", 0, "diverged", 6, 0)   # one step later: agrees
    put_pair("fp32", 1, "diverged", 5, 0)
    put_pair("bf16", 1, "completed", None, 0)
    out = precision_ab.report({"divergence": [0, 1, 2], "learning": [0]}, store)["checks"]
    div = out["divergence"]
    assert div["agree"] is None and "seed 2 fp32" in div["missing"][0]  # seed 2 not stored
    assert [p["agree"] for p in div["pairs"][:3]] == [True, False, None]
    assert div["pairs"][1]["why"] == ["status diverged against completed"]
    assert out["learning"]["agree"] is None and len(out["learning"]["missing"]) == 8
    a = {"status": "completed", "train_loss": [2.0, 1.5], "test_acc": [0.30, 0.40]}
    b = {"status": "completed", "train_loss": [2.05, 1.6], "test_acc": [0.31, 0.37]}
    assert precision_ab.differences("learning", a, b) == ["epoch 2 train loss 1.5 against 1.6",
                                                           "epoch 2 test accuracy 0.4 against 0.37"]
    assert precision_ab.differences("learning", a, a) == []


def test_fig3_probe_smoke_times_both_layouts_and_checks_they_agree(tmp_path):
    run_script("fig3_probe.py", "--preset", "smoke", "--out", str(tmp_path / "fig3.json"))
    report = json.loads((tmp_path / "fig3.json").read_text())
    assert [r["layout"] for r in report["rows"]] == ["channels_last", "nchw"]
    assert report["rows"][1]["speedup_vs_nchw"] == 1.0 and report["floor_per_default_seed_s"] > 0
    assert report["agreement"]["same_first_above_1e3"]
    assert report["agreement"]["max_rel_diff_below_1e3"] < 1e-3


def test_precision_ab_sets_each_bf16_gap_against_its_own_runs_rounding_control(tmp_path):
    """The rounding control pairs each learning setting's fp32 run with its NCHW twin, stored in
    an experiment of its own; `within_rounding` compares each run's bf16 gap with that run's own
    control gap: seed 1's bf16 gap is below seed 0's control gap, but not below its own; a pair
    that agrees needs no control."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import precision_ab
    from shared.config import TRAINING_EXPERIMENT
    from shared.results import Store

    store = Store(tmp_path / "results", tmp_path / "ck")
    fp32, bf16 = (precision_ab.learning_configs(p)[0] for p in ("fp32", "bf16"))  # BN, lr 0.1

    def put_accs(experiment, cfg, seed, accs):
        result = {"status": "completed", "metrics": [{"train_loss": 2.0, "test_acc": a} for a in accs]}
        put(store, experiment, cfg, seed, result, "cpu", 1.0, "test")

    def put_seed(seed, fp32_accs, bf16_accs, nchw_accs):
        put_accs(TRAINING_EXPERIMENT, fp32, seed, fp32_accs)
        put_accs(TRAINING_EXPERIMENT, bf16, seed, bf16_accs)
        put_accs(precision_ab.FP32_NCHW.experiment, fp32, seed, nchw_accs)

    seed0 = [0.25, 0.35], [0.24, 0.30], [0.27, 0.22]  # bf16 5 points off at epoch 2; rounding alone: 13
    put_seed(0, *seed0)
    out = precision_ab.report({"learning": [0], "rounding": [0]}, store)["checks"]
    assert out["rounding"]["pairs"][0]["agree"] is False
    assert out["learning"]["largest_test_acc_gap"] == pytest.approx(0.05)
    assert out["rounding"]["largest_test_acc_gap"] == pytest.approx(0.13)
    assert out["learning"]["within_rounding"] is True
    assert [c["pair"] for c in out["learning"]["controlled_pairs"]] == ["BN, lr 0.1 seed 0"]

    put_seed(1, [0.24, 0.36], [0.21, 0.25], [0.22, 0.33])  # bf16 11 points off; its own control: 3
    out = precision_ab.report({"learning": [0, 1], "rounding": [0, 1]}, store)["checks"]
    assert out["learning"]["controlled_pairs"][1] == {"pair": "BN, lr 0.1 seed 1", "agree": False,
                                                      "bf16_gap": pytest.approx(0.11), "rounding_gap": pytest.approx(0.03)}
    assert out["learning"]["within_rounding"] is False  # the largest gaps alone (0.11 <= 0.13) would pass

    # a pair that agrees (at chance, 0.2 points apart) needs no control, whatever the control's gap
    store = Store(tmp_path / "results2", tmp_path / "ck2")
    put_seed(0, *seed0)
    put_seed(1, [0.100, 0.101], [0.100, 0.103], [0.100, 0.100])
    out = precision_ab.report({"learning": [0, 1], "rounding": [0, 1]}, store)["checks"]
    assert out["learning"]["controlled_pairs"][1]["agree"] is True
    assert out["learning"]["controlled_pairs"][1]["bf16_gap"] > out["learning"]["controlled_pairs"][1]["rounding_gap"]
    assert out["learning"]["within_rounding"] is True
    assert "BN, lr 0.003 seed 0 fp32 NCHW" in out["rounding"]["missing"]
