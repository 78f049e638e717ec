import dataclasses

import pytest

from shared.config import TRAIN_PRESETS, TrainConfig, train_config


def test_paper_preset_is_the_papers_protocol():
    cfg = train_config("paper")
    assert (cfg.arch, cfg.bn, cfg.lr, cfg.epochs, cfg.batch_size) == ("resnet110", True, 0.1, 165, 128)
    assert (cfg.momentum, cfg.weight_decay, cfg.lr_drops, cfg.precision) == (0.9, 5e-4, (0.5, 0.75), "fp32")
    assert cfg.max_epochs == 165 * 16  # the doubling rule may reach 2640 epochs


def test_presets_are_frozen_and_overridable():
    cfg = train_config("smoke", bn=False, lr=1e-4)
    assert (cfg.bn, cfg.lr, cfg.arch) == (False, 1e-4, "resnet20")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1
    assert TRAIN_PRESETS["smoke"].lr == 0.1  # the preset itself is untouched


@pytest.mark.parametrize("call, message", [
    (lambda: train_config("huge"), "unknown preset 'huge'; valid: smoke, cpu, quick, paper"),
    (lambda: train_config("paper", lr=0.0), "lr must be positive, got 0.0"),
    (lambda: train_config("paper", lr=-1e-3), "lr must be positive, got -0.001"),
    (lambda: train_config("paper", arch="vgg16"), "unknown arch 'vgg16'; valid: resnet20"),
    (lambda: train_config("paper", init="zeros"), "unknown init 'zeros'; valid: xavier_uniform"),
    (lambda: train_config("paper", precision="fp16"), "unknown precision 'fp16'; valid: fp32, tf32, bf16"),
    (lambda: train_config("paper", learning_rate=0.1), "unknown TrainConfig field 'learning_rate'; valid: arch"),
    (lambda: TrainConfig(epochs=10, max_epochs=5), r"max_epochs \(5\) must be >= epochs \(10\)"),
    (lambda: TrainConfig(lr_drops=(0.75, 0.5)), "lr_drops must be increasing fractions"),
    (lambda: TrainConfig(train_subset=0), "train_subset must be positive, got 0"),
])
def test_bad_configs_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
