import math

import pytest
import torch

from shared import experiments as X
from shared.atinit import network_pair
from shared.figures.fig2 import measure_gradients
from dataclasses import replace

from shared.figures.fig3 import RelativeLossConfig, measure_relative_loss
from shared.models import weight_layers
from shared.results import Store

from test_train import random_cifar


def test_presets_and_bad_names():
    assert X.experiment_config("fig2_gradients").arch == "resnet110"
    assert X.experiment_config("fig2_gradients", "smoke").arch == "resnet20"
    with pytest.raises(ValueError, match="unknown experiment 'fig9'; valid: fig2_gradients"):
        X.experiment_config("fig9")
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid: smoke, paper"):
        X.experiment_config("fig2_gradients", "huge")
    with pytest.raises(ValueError, match="unknown GradientConfig field 'lr'; valid: arch"):
        X.experiment_config("fig2_gradients", lr=0.1)
    with pytest.raises(ValueError, match="unknown init 'ones'"):
        X.experiment_config("fig5_depth_profile", init="ones")


def test_a_preset_is_a_whole_config_per_experiment():
    """Every preset names every experiment's config outright: "paper" the classes' defaults (the
    paper's setup), "smoke" a small network on a few images (or small matrices, Fig 7)."""
    assert set(X.PRESETS) == set(X.PROBE_PRESETS)
    for preset, configs in X.PRESETS.items():
        assert set(configs) == set(X.EXPERIMENTS), preset
        for name, cfg in configs.items():
            assert type(cfg) is type(X.EXPERIMENTS[name].presets["paper"]) and X.EXPERIMENTS[name].name == name
    assert all(cfg == type(cfg)() for cfg in X.PRESETS["paper"].values())
    smoke = X.PRESETS["smoke"]
    assert {cfg.arch for name, cfg in smoke.items() if hasattr(cfg, "arch")} == {"resnet20"}
    assert smoke["fig7_singular_values"].n < X.PRESETS["paper"]["fig7_singular_values"].n
    assert X.experiment_config("fig3_relative_loss", "smoke", sizes=20) == RelativeLossConfig(
        **X.SMOKE_NETWORK, sizes=20)  # overrides replace the preset's fields


def test_layer_lists_scale_with_depth():
    assert X.experiment_config("table1_contributions").layers == (2, 20, 38, 55, 74, 92, 109)
    assert X.experiment_config("fig4_diverging_update", arch="resnet101").layers == (7, 40, 73)
    assert X.experiment_config("fig4_diverging_update", "smoke").layers == (2, 8, 15)


def test_network_pair_shares_weights():
    pair = network_pair(X.experiment_config("fig2_gradients", "smoke"), 3, "cpu")
    for a, b in zip(weight_layers(pair["bn"]), weight_layers(pair["no_bn"])):
        assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("experiment", [e for e in X.EXPERIMENTS if e != "fig7_singular_values"])
def test_every_measurement_runs_on_small_data(experiment):
    cfg = X.experiment_config(experiment, "smoke", train_subset=None)
    result = X.EXPERIMENTS[experiment].measure(cfg, random_cifar(n_train=64, n_test=16), 0)
    if experiment == "fig4_diverging_update":
        assert set(result["layers"]) == {"2", "8", "15"}
    elif experiment == "collapse":  # one network, traced step by step
        assert [r["step"] for r in result["rows"]] == list(range(cfg.steps + 1))
    else:
        assert {"bn", "no_bn"} <= set(result)


def test_fig2_no_bn_gradients_are_larger_and_heavier_tailed():
    cfg = X.experiment_config("fig2_gradients", "smoke", arch="resnet56", batch_size=32, train_subset=None)
    result = measure_gradients(cfg, random_cifar(n_train=64, n_test=16), 0)
    assert result["bn"]["layer"] == 28 and result["scale_ratio"] > 3
    assert result["no_bn"]["excess_kurtosis"] > result["bn"]["excess_kurtosis"]


def test_command_line_stores_one_run_per_seed(tmp_path, monkeypatch):
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path)
    X.main(["fig7_singular_values", "--preset", "smoke", "--seeds", "0", "1", "--set", "n=32"])
    cfg = X.experiment_config("fig7_singular_values", "smoke", n=32)
    runs = Store(tmp_path).runs("fig7_singular_values", cfg)
    assert [r.provenance["seed"] for r in runs] == [0, 1]
    assert runs[0].result["1"]["max"] != runs[1].result["1"]["max"]


def test_none_means_the_presets_value_only_where_none_is_not_a_value():
    assert X.experiment_config("fig2_gradients", "smoke", arch=None).arch == "resnet20"
    assert X.experiment_config("fig2_gradients", "paper", arch=None, init=None) == X.experiment_config("fig2_gradients")
    assert X.experiment_config("fig6_logit_gradients", epoch_batches=None).epoch_batches is None


def test_fig3_layout_is_an_option_that_changes_rounding_only():
    """layout "channels_last" (faster on a CPU) sums in another order than the default "nchw": the
    same first step above 1e3 everywhere, and on the first mini-batch (nothing trained yet) the
    same relative loss to 1e-3 up to step 0.1. Later mini-batches, after steps at rate 0.1 with
    BN, amplify the rounding (benchmarks/fig3_probe.py), so the layout is part of a run's identity."""
    from shared.config import identity
    data = random_cifar(n_train=64, n_test=16)
    cfg = X.experiment_config("fig3_relative_loss", "smoke", train_subset=None, probe_batches=(1, 3))
    plain, fast = measure_relative_loss(cfg, data, 0), measure_relative_loss(replace(cfg, layout="channels_last"), data, 0)
    for name in ("bn", "no_bn"):
        for batch in ("1", "3"):
            a, b = fast[name]["batches"][batch], plain[name]["batches"][batch]
            assert a["first_above_1e3"] == b["first_above_1e3"]
        a, b = fast[name]["batches"]["1"]["relative_loss"], plain[name]["batches"]["1"]["relative_loss"]
        small = [(u, v) for s, u, v in zip(fast["sizes"], a, b) if s <= 0.1]
        assert len(small) >= 8 and all(math.isfinite(v) for _, v in small)
        assert all(u == pytest.approx(v, rel=1e-3) for u, v in small)
    assert "layout" not in identity(cfg) and identity(replace(cfg, layout="channels_last"))["layout"] == "channels_last"
    with pytest.raises(ValueError, match="unknown layout 'nhwc'; valid: nchw, channels_last"):
        replace(cfg, layout="nhwc")


def test_fig3_options_change_only_what_they_say():
    """state "init" probes every mini-batch at initialisation: the first (no step before it) is
    the trained run's, the later ones differ; direction "update" differs from the plain gradient
    step from the first mini-batch on (weight decay), and bad values are named."""
    data = random_cifar(n_train=64, n_test=16)
    base = X.experiment_config("fig3_relative_loss", "smoke", train_subset=None, probe_batches=(1, 3))
    runs = {name: measure_relative_loss(replace(base, **change), data, 0) for name, change in
            {"trained": {}, "init": {"state": "init"}, "update": {"direction": "update"}}.items()}

    def curve(run, batch):
        return run["no_bn"]["batches"][batch]["relative_loss"]

    assert curve(runs["init"], "1") == curve(runs["trained"], "1")
    assert curve(runs["init"], "3") != curve(runs["trained"], "3")
    assert curve(runs["update"], "1") != curve(runs["trained"], "1")
    with pytest.raises(ValueError, match="unknown direction 'sgd'; valid: gradient, update"):
        replace(base, direction="sgd")
    with pytest.raises(ValueError, match="unknown state 'warm'; valid: trained, init"):
        replace(base, state="warm")
    # the added fields keep the stored runs' identity while they hold the defaults
    from shared.config import identity
    assert "direction" not in identity(base) and "state" not in identity(base)
    assert identity(replace(base, state="init"))["state"] == "init"
