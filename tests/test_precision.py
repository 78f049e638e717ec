"""Mixed precision: bf16 training trains (autocast per step, not around the loop), TF32 switching,
and the CPU's bf16 units."""

import pytest
import torch
from helpers import QUIET, TINY, random_cifar

from shared import precision
from shared.config import train_config
from shared.precision import autocast, cpu_bf16_units, cpu_flags, cpu_info, resolve_precision, tf32_setting
from shared.train import Runs, evaluate, train

STEPS = 12  # one step an epoch (64 images, batch 64), every step's loss recorded


def one_step_epochs(prec: str, steps: int = STEPS, **overrides):
    """A small network without BN trained `steps` single-step epochs in precision `prec`; with Kaiming
    init its untrained loss is about 40, which a few steps at lr 1e-3 bring down to about 2.5."""
    fields = {**TINY, "batch_size": 64, "bn": False, "init": "kaiming_normal_fan_in", "fc_init": "same",
              "lr": 1e-3, "epochs": steps, "max_epochs": steps,
              "lr_drops": (), "record_step_losses": steps, "precision": prec, **overrides}
    cfg = train_config("smoke", **fields)
    return cfg, train(cfg, random_cifar(n_train=64, n_test=40), seed=0, ctx=QUIET)


def step_losses(result) -> list[float]:
    return [m["step_losses"][0] for m in result["metrics"]]


def test_bf16_training_tracks_fp32_far_below_the_untrained_loss():
    _, fp32 = one_step_epochs("fp32")
    _, bf16 = one_step_epochs("bf16")
    assert fp32["status"] == bf16["status"] == "completed"
    first, last32, last16 = step_losses(fp32)[0], step_losses(fp32)[-1], step_losses(bf16)[-1]
    assert step_losses(bf16)[0] == pytest.approx(first, rel=0.02)  # the same untrained network
    assert last32 < 0.2 * first                                    # fp32 learns ...
    assert last16 < 0.2 * first                                    # ... and so does bf16,
    assert last16 == pytest.approx(last32, rel=0.05)               # tracking fp32 (rounding only)
    assert fp32["metrics"][-1]["test_loss"] == pytest.approx(bf16["metrics"][-1]["test_loss"], rel=0.05)


def test_a_bf16_optimizer_step_changes_what_the_network_outputs():
    # One autocast region around the loop would evaluate the cached bf16 copy of the initial
    # weights after every epoch: the same test loss each time, the untrained network's.
    cfg, result = one_step_epochs("bf16", steps=2)
    test_losses = [m["test_loss"] for m in result["metrics"]]
    assert test_losses[0] != test_losses[1]
    data = random_cifar(n_train=64, n_test=40)
    untrained = Runs([cfg], [0], torch.device("cpu"))
    assert evaluate(untrained, data, cfg.eval_batch_size)[0][0] not in test_losses


def test_evaluation_in_bf16_runs_under_autocast_and_fp32_does_not():
    data = random_cifar(n_train=64, n_test=40)
    cfgs = {p: train_config("smoke", **{**TINY, "bn": False, "precision": p}) for p in ("fp32", "bf16")}
    losses = {p: evaluate(Runs([c], [0], torch.device("cpu")), data, 40)[0][0] for p, c in cfgs.items()}
    assert losses["fp32"] != losses["bf16"]                       # bf16 rounds ...
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)  # ... a little


def test_tf32_setting_sets_and_restores_the_switches():
    torch.backends.cuda.matmul.allow_tf32 = True
    with tf32_setting("fp32"):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32
    with tf32_setting("tf32"):
        assert torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, tf32, bf16"):
        with tf32_setting("fp16"):
            pass


def test_autocast_is_bf16_for_bf16_only():
    with autocast("bf16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    for prec in ("fp32", "tf32"):
        with autocast(prec, torch.device("cpu")):
            assert not torch.is_autocast_enabled("cpu")


def test_cpu_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    zen4, sapphire_rapids = tmp_path / "zen4", tmp_path / "sapphire_rapids"
    zen4.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    sapphire_rapids.write_text("flags\t\t: fpu sse amx_bf16 amx_tile avx512_bf16\n")
    assert cpu_bf16_units(cpu_flags(zen4)) == ("avx512_bf16",) and cpu_info(zen4)["model name"] == "AMD EPYC"
    assert cpu_bf16_units(cpu_flags(sapphire_rapids)) == ("amx_bf16", "avx512_bf16")
    assert cpu_bf16_units(frozenset({"avx2", "fma"})) == ()
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_precision_is_bf16_only_on_a_cpu_whose_bf16_units_pay(monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("amx_bf16", "avx512_bf16"))
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 3.8)   # AMX, as measured on a Xeon
    assert resolve_precision("auto", "cpu") == "bf16"
    # AVX512-BF16 alone: the units are there, but bf16 runs at half the fp32 rate (measured on a Xeon)
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("avx512_bf16",))
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.53)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert "runs at 0.53x the fp32 rate, below the 1.5x" in capsys.readouterr().out
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("timed without bf16 units"))
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ())
    assert resolve_precision("auto", "cpu") == "fp32"
    assert "no bf16 units" in capsys.readouterr().out
    assert resolve_precision("auto", "cuda") == "fp32"   # a GPU keeps the faithful default
    assert resolve_precision("tf32", "cpu") == "tf32"    # an explicit choice is kept
    with pytest.raises(ValueError, match="unknown precision 'half'; valid: fp32, tf32, bf16, auto"):
        resolve_precision("half", "cpu")


def test_matmul_rate_is_a_plausible_flop_rate_and_the_speedup_its_ratio(monkeypatch):
    # 2 n^3 FLOPs per product: a CPU core does between 1 GFLOP/s and 10 TFLOP/s on a 256-matrix
    for p in ("fp32", "bf16"):
        assert 1e9 < precision.matmul_rate(p, "cpu", size=256, seconds=0.01) < 1e13
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        precision.matmul_rate("fp16")
    rates = {"bf16": 3e12, "fp32": 1e12}
    monkeypatch.setattr(precision, "matmul_rate", lambda p, *a, **k: rates[p])
    precision.cpu_bf16_speedup.cache_clear()
    try:
        assert precision.cpu_bf16_speedup() == 3.0
    finally:
        precision.cpu_bf16_speedup.cache_clear()
