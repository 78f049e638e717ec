import dataclasses
import json
import types

import pytest

from shared.config import (TRAIN_PRESETS, TrainConfig, added, canonical_shortcut, check_network, identity,
                           stored_config, train_config)
from shared.figures.fig5 import DepthConfig
from shared.results import config_hash


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
    (lambda: train_config("huge"), "unknown preset 'huge'; valid: smoke, cpu, preview, quick, paper"),
    (lambda: train_config("paper", lr=0.0), "lr must be positive, got 0.0"),
    (lambda: train_config("paper", lr=-1e-3), "lr must be positive, got -0.001"),
    (lambda: train_config("paper", arch="vgg16"), "unknown arch 'vgg16'; valid: resnet20"),
    (lambda: train_config("paper", init="zeros"), "unknown init 'zeros'; valid: xavier_uniform"),
    (lambda: train_config("paper", precision="fp16"), "unknown precision 'fp16'; valid: fp32, tf32, bf16"),
    (lambda: train_config("paper", learning_rate=0.1), "unknown TrainConfig field 'learning_rate'; valid: arch"),
    (lambda: TrainConfig(epochs=10, max_epochs=5), r"max_epochs \(5\) must be >= epochs \(10\)"),
    (lambda: TrainConfig(lr_drops=(0.75, 0.5)), "lr_drops must be increasing fractions"),
    (lambda: TrainConfig(train_subset=0), "train_subset must be positive, got 0"),
    (lambda: TrainConfig(epochs=2, max_epochs=2, warmup_epochs=2), r"warmup_epochs \(2\) must be < epochs \(2\)"),
    (lambda: TrainConfig(warmup_epochs=-1), "warmup_epochs must be >= 0, got -1"),
])
def test_bad_configs_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("inf"), r"TrainConfig.lr must be a finite number, got inf"),
    ("weight_decay", float("nan"), r"TrainConfig.weight_decay must be a finite number, got nan"),
    ("bn", "False", r"TrainConfig.bn must be True or False, got 'False' \(str\)"),
    ("epochs", True, r"TrainConfig.epochs must be an int, got True \(bool\)"),
    ("epochs", 2.5, r"TrainConfig.epochs must be an int, got 2.5"),
    ("momentum", -5, r"momentum must be >= 0, got -5"),
    ("lr_drops", (0.5, "x"), r"TrainConfig.lr_drops must be a tuple of a finite number"),
    ("fc_init", "zeros", r"unknown fc_init 'zeros'; valid: same, xavier_uniform"),
    ("shortcut", "C", r"unknown shortcut for resnet110 'C'; valid: None, A, B"),
])
def test_every_field_is_type_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        train_config("paper", **{field: value})


def test_a_network_has_one_spelling():
    assert train_config("paper", shortcut="A") == train_config("paper", shortcut=None)  # A: the CIFAR standard
    assert train_config("paper").shortcut == "B"  # the project's default network (shared.figures.candidates)
    assert train_config("paper", arch="resnet101", shortcut="B").shortcut is None  # torchvision's own
    with pytest.raises(ValueError, match=r"shortcut for resnet101 'A'; valid: None, B"):
        train_config("paper", arch="resnet101", shortcut="A")


def test_validating_a_network_changes_nothing():
    """check_network only checks; the one spelling is written while the config is constructed."""
    written = types.SimpleNamespace(arch="resnet110", init="xavier_uniform", fc_init="same", shortcut="A",
                                    residual="plain")
    check_network(written)
    assert written.shortcut == "A"
    assert canonical_shortcut("resnet110", "A") is None and canonical_shortcut("resnet110", "B") == "B"
    assert canonical_shortcut("resnet101", "B") is None


def test_a_field_added_with_its_neutral_value_keeps_every_stored_key():
    """Stored runs keep their keys when a config grows a field whose default changes nothing."""
    @dataclasses.dataclass(frozen=True)
    class Before:
        lr: float = 0.1

    @dataclasses.dataclass(frozen=True)
    class After:
        lr: float = 0.1
        shortcut: str | None = added(None)

    assert config_hash(After()) == config_hash(Before())
    assert config_hash(After(lr=0.01)) == config_hash(Before(lr=0.01))
    assert config_hash(After(shortcut="B")) != config_hash(After())
    assert identity(After(shortcut="B")) == {"lr": 0.1, "shortcut": "B"}


def test_the_committed_store_keys_are_the_configs_identities():
    """Every stored run sits under the hash of its stored config, as it is read back today."""
    from shared.experiments import EXPERIMENTS
    from shared.paths import RESULTS_ROOT
    checked = 0
    for path in RESULTS_ROOT.glob("*/*/seed*/provenance.json"):
        prov = json.loads(path.read_text())
        experiment = path.parts[-4]
        cls = TrainConfig if experiment.startswith("training") else type(EXPERIMENTS[experiment].presets["paper"])
        config = stored_config(cls, prov["config"])
        assert config_hash(config) == prov["config_hash"] == path.parts[-3], path
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("make, field, value", [
    (lambda **kw: train_config("cpu", **kw), "divergence_factor", 5.0),
    (lambda **kw: train_config("cpu", **kw), "divergence_check_every", 1),
    (lambda **kw: train_config("cpu", **kw), "chance_accuracy", 0.1),
    (lambda **kw: train_config("cpu", **kw), "warmup_epochs", 1),
    (lambda **kw: DepthConfig(**kw), "first_layer", 1),
    (lambda **kw: DepthConfig(**kw), "layer_step", 6),
])
def test_the_constants_of_divergence_chance_and_fig5s_layers_are_part_of_a_runs_identity(make, field, value):
    """Values that change a stored number are config fields: changing one changes the run's key,
    while the default (what every stored run used) keeps the key it had."""
    default = make()
    assert config_hash(make(**{field: value})) != config_hash(default)
    assert field not in identity(default)  # neutral: the stored keys stay


def test_bad_divergence_and_chance_fields_are_refused():
    with pytest.raises(ValueError, match="divergence_factor must be positive, got 0"):
        train_config("cpu", divergence_factor=0.0)
    with pytest.raises(ValueError, match=r"chance_accuracy must be in \[0, 1\), got 1.5"):
        train_config("cpu", chance_accuracy=1.5)
    with pytest.raises(ValueError, match="DepthConfig.layer_step must be positive, got 0"):
        DepthConfig(layer_step=0)


def _alternatives(value):
    """Other values of a field's type to try, most plausible first."""
    from shared import config as C
    from shared.figures.fig3 import FIG3_DIRECTIONS, FIG3_LAYOUTS, FIG3_STATES
    from shared.figures.fig5 import FIG5_CHANNELS
    strings = [*C.ARCHS, *C.INITS, *C.SHORTCUTS, *C.RESIDUALS, *C.PRECISIONS, *FIG3_DIRECTIONS, *FIG3_STATES,
               *FIG3_LAYOUTS, *FIG5_CHANNELS]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, 1, 0]
    if isinstance(value, float):
        return [value * 2 + 0.1, value / 2, 0.5, value - 1]
    if isinstance(value, str):
        return [s for s in strings if s != value]
    if isinstance(value, tuple):
        return [value[:-1], value + (value[-1] * 2 if value else 1,), (0.25,), (2,)]
    return [1, 0.5, "B", "A", (1,), 100]  # None


@pytest.mark.parametrize("cls", ["TrainConfig", *sorted(__import__("shared.experiments").experiments.EXPERIMENTS)])
def test_every_field_of_every_config_is_part_of_a_runs_identity(cls):
    """Change each field of each config (the training one, each experiment's) to another valid value:
    the run's key changes. A value with a default outside the config could change a stored number
    without changing its key (the store would serve a stale run)."""
    from shared.experiments import experiment_config
    base = train_config("paper", bn=False) if cls == "TrainConfig" else experiment_config(cls, "paper")
    untested = []
    for f in dataclasses.fields(base):
        for value in _alternatives(getattr(base, f.name)):
            try:
                changed = dataclasses.replace(base, **{f.name: value})
            except (ValueError, TypeError):
                continue
            if identity(changed) != identity(base):
                assert config_hash(changed) != config_hash(base), f"{cls}.{f.name}"
                break
        else:
            untested.append(f.name)
    assert not untested, f"no other valid value tried for {cls}: {untested}"


def _steps(cfg) -> int:
    """The mini-batch steps a training run of `cfg` takes at most."""
    per_epoch = -(-(cfg.train_subset or 50_000) // cfg.batch_size)
    return cfg.max_epochs * min(per_epoch, cfg.steps_per_epoch or per_epoch)


def test_smoke_is_small_for_every_grid_experiment_and_notebook():
    """The smoke preset checks that everything runs, in seconds on any CPU: every training run of
    every grid (the figures' and the depth ladder's and the normalisation-free networks' included)
    takes at most 6 steps on at most 200 training and 100 test images, and every at-initialisation
    experiment measures ResNet-20 (or small matrices) on at most 200 images."""
    from shared.grids import GRIDS
    from shared.experiments import PRESETS
    from shared.figures import depth, normfree
    runs = [cfg for grid in GRIDS.values() for cfg in grid("smoke")]
    runs += [depth.ladder_training_config("smoke", arch, bn, lr) for arch in depth.PRESET_DEPTHS["smoke"]
             for bn in (True, False) for lr in (1e-5, 1.0)]
    runs += [normfree.training_config(key, "smoke", lr) for key in normfree.SCHEMES for lr in normfree.TRAINING_RATES]
    too_big = [(c.arch, c.bn, c.lr, _steps(c), c.train_subset, c.test_subset) for c in runs
               if _steps(c) > 6 or not (c.train_subset or 10 ** 9) <= 200 or not (c.test_subset or 10 ** 9) <= 100]
    assert not too_big
    for name, cfg in PRESETS["smoke"].items():
        assert getattr(cfg, "arch", "resnet20") == "resnet20" and (getattr(cfg, "train_subset", None) or 0) <= 200, name
        assert getattr(cfg, "steps", 0) <= 6 and getattr(cfg, "n", 0) <= 64, name
