"""No silent slow path: a run whose precision crawls on this CPU is not started unasked
(`shared.train.pace`). The CPU's speeds are mocked, so the tests hold on every CPU."""

import pytest

from shared.config import TRAINING_EXPERIMENT, train_config
from shared.grids import fig1_grid
from shared.compute import RunContext
from shared.train import run_grid
from shared.train.__main__ import main
from shared.train import pace

STEP_S = {"fp32": 0.1, "bf16": 1.2}  # a bf16 step 12x slower, as on an AVX2-only CPU


@pytest.fixture
def crawling_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(pace, "cpu_bf16_speedup", lambda: 0.01)
    monkeypatch.setattr(pace, "step_seconds", lambda precision: STEP_S[precision])
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr("shared.paths.CHECKPOINT_ROOT", tmp_path / "ck")
    monkeypatch.setattr("shared.train.runner.train", lambda *a, **k: pytest.fail("a run was started"))


def test_the_estimate_scales_one_timed_step_by_the_runs_flops_and_images(monkeypatch):
    monkeypatch.setattr(pace, "step_seconds", lambda precision: STEP_S[precision])
    cfg = train_config("cpu", bn=False)  # ResNet-110, 15 epochs of 50,000 images
    fp32, bf16 = (pace.estimated_seconds(cfg, p) for p in ("fp32", "bf16"))
    assert bf16 / fp32 == pytest.approx(12)
    ratio = pace.training_flops_per_image("resnet110", False) / pace.training_flops_per_image("resnet20")
    assert 5 < ratio < 7  # 110 layers against 20
    assert fp32 == pytest.approx(0.1 / 32 * ratio * 50_000 * 15)
    smoke = train_config("smoke")  # 200 images (3 steps of 128 would be more), 2 epochs
    assert pace.estimated_seconds(smoke, "fp32") == pytest.approx(0.1 / 32 * 200 * 2)


def test_a_grid_in_a_crawling_precision_is_refused_before_any_work(crawling_bf16):
    grid = fig1_grid("cpu")
    with pytest.raises(pace.SlowPrecisionError, match=r"0\.01x fp32.*in bf16 against .* h in fp32.*--precision bf16"):
        run_grid(grid, 0, TRAINING_EXPERIMENT, RunContext(device="cpu", progress=False))


def test_the_command_says_why_and_exits_unless_bf16_was_asked_for(crawling_bf16, capsys, tiny_image_folder):
    argv = ["fig1", "--preset", "cpu", "--seeds", "0", "--device", "cpu", "--data-dir", str(tiny_image_folder)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Not started" in err and "--precision bf16" in err and "h in fp32" in err


def test_asked_for_explicitly_it_says_so_and_goes_on(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(pace, "cpu_bf16_speedup", lambda: 0.01)
    monkeypatch.setattr(pace, "step_seconds", lambda precision: STEP_S[precision])
    pace.check_pace(fig1_grid("cpu"), "cpu", explicit=True)
    assert "Going on: bf16 was asked for" in capsys.readouterr().out


def test_fp32_runs_a_gpu_and_a_cpu_where_bf16_pays_are_never_held_back(monkeypatch):
    monkeypatch.setattr(pace, "step_seconds", lambda precision: pytest.fail("timed without need"))
    monkeypatch.setattr(pace, "cpu_bf16_speedup", lambda: 0.01)
    pace.check_pace(fig1_grid("paper"), "cpu")            # fp32
    pace.check_pace(fig1_grid("cpu"), "cuda")             # a GPU
    monkeypatch.setattr(pace, "cpu_bf16_speedup", lambda: 2.1)
    pace.check_pace(fig1_grid("cpu"), "cpu")              # bf16 pays here
    pace.check_pace([], "cpu")
