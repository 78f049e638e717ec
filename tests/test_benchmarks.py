"""The benchmark scripts run end to end in their small CPU modes (their numbers are not claims)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, **env: str) -> None:
    subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO, check=True,
                   env={**os.environ, **env}, capture_output=True, text=True)


def test_train_speed_smoke_writes_a_table_with_ratios(tmp_path):
    run_script("train_speed.py", "--preset", "smoke", "--out", str(tmp_path / "speed.json"))
    report = json.loads((tmp_path / "speed.json").read_text())
    rows = {r["pipeline"]: r for r in report["rows"]}
    assert list(rows) == ["blog", "blog-2w", "ours", "ours-nchw", "ours-bf16", "ours-x2"]
    assert rows["blog"]["speedup_vs_blog"] == 1.0 and rows["ours-x2"]["runs"] == 2
    assert rows["ours-nchw"]["ratio_vs_fp32_nchw"] == rows["ours-nchw"]["epoch_ratio_vs_fp32_nchw"] == 1.0
    assert [r["precision"] for r in rows.values()] == ["fp32"] * 4 + ["bf16", "fp32"]
    assert [r["epoch_measured"] for r in rows.values()] == [False] * 4 + [True, False]
    assert all(r["s_per_epoch"] > 0 and r["s_per_step"] > 0 and r["train_images_per_s"] > 0 for r in rows.values())
    assert report["device"].startswith("cpu") and report["bench"]["batch_size"] == 32
    assert set(report["cpu"]) == {"model", "bf16_units", "threads"} and set(report["matmul_tflop_per_s"]) == {"fp32", "bf16"}


def test_precision_ab_compares_every_precision_with_fp32(tmp_path, tiny_image_folder):
    run_script("precision_ab.py", "--preset", "smoke", "--seeds", "0", "--settings", "2",
               "--precisions", "fp32", "bf16", "--data-dir", str(tiny_image_folder), "--device", "cpu",
               "--out", str(tmp_path / "ab.json"),
               BN_RESULTS_DIR=str(tmp_path / "results"), BN_CHECKPOINT_DIR=str(tmp_path / "ck"))
    rows = json.loads((tmp_path / "ab.json").read_text())["rows"]
    assert [(r["setting"], r["precision"]) for r in rows] == [
        ("BN, lr 0.1", "fp32"), ("BN, lr 0.003", "fp32"), ("BN, lr 0.1", "bf16"), ("BN, lr 0.003", "bf16")]
    assert all(r["vs_fp32"] == "within seed spread" for r in rows[:2])  # fp32 against itself
    stored = list((tmp_path / "results" / "training").glob("*/seed0/provenance.json"))
    assert sorted(json.loads(p.read_text())["precision"] for p in stored) == ["bf16", "bf16", "fp32", "fp32"]


def test_fig3_probe_smoke_times_both_layouts_and_checks_they_agree(tmp_path):
    run_script("fig3_probe.py", "--preset", "smoke", "--out", str(tmp_path / "fig3.json"))
    report = json.loads((tmp_path / "fig3.json").read_text())
    assert [r["layout"] for r in report["rows"]] == ["channels_last", "nchw"]
    assert report["rows"][1]["speedup_vs_nchw"] == 1.0 and report["floor_per_default_seed_s"] > 0
    assert report["agreement"]["same_first_above_1e3"]
    assert report["agreement"]["max_rel_diff_below_1e3"] < 1e-3
