"""Training configuration: one frozen dataclass and its named presets.

Defaults follow the paper's appendix B (see also the project's reference notes): ResNet-110,
SGD with momentum 0.9 and weight decay 5e-4, batch 128, cross-entropy, 165 epochs with the rate
divided by 10 after 50 % and 75 % of them, and the number of epochs doubled until training
plateaus ("if learning doesn't plateau for some number of epochs, we roughly double the number of
epochs until it does"). How the plateau is decided is written down in `shared.train.loop.plateaued`.
"""

import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, replace

# The networks and their options (built by shared.models; listed here, where configs are checked)
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
ARCHS = (*CIFAR_DEPTHS, "resnet101")
# "pytorch_default" keeps what PyTorch's layer constructors draw (kaiming_uniform_(a=sqrt(5)) weights,
# uniform biases): what a 2018 PyTorch model got without an explicit init.
INITS = ("xavier_uniform", "xavier_normal", "kaiming_normal_fan_out", "kaiming_normal_fan_in",
         "pytorch_default")
# The classifier's init: "same" as the convolutions, or any scheme of INITS on its own. torchvision's
# ResNets use kaiming_normal_fan_out on convolutions and keep the classifier's pytorch_default.
FC_INITS = ("same", *INITS)
# Shortcuts of the CIFAR ResNets where a stage halves the resolution and doubles the channels
# (He et al. 2016, Sec. 3.3): "A" subsamples and zero-pads (parameter-free, the paper's CIFAR
# ResNets); "B" is a 1x1 strided convolution followed by BN (a projection, like torchvision's).
SHORTCUTS = ("A", "B")
# The residual scheme of a CIFAR ResNet without BN: "plain" (He et al. 2016); "skipinit" (De & Smith
# 2020): a learnable scalar, initialised to 0, at the end of each residual branch; "fixup" (Zhang,
# Dauphin & Ma 2019): rescaled branch init, last layers at 0, scalar biases and multipliers.
RESIDUALS = ("plain", "skipinit", "fixup")


def check_choice(what: str, value, valid) -> None:
    """Raise a ValueError naming the bad `value` and the valid ones."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


PRECISIONS = ("fp32", "tf32", "bf16")

# The network the paper most likely used, chosen by the candidate comparison (shared.figures.candidates,
# notebooks/10_network_choice.ipynb): option-B shortcuts at the stage transitions, the stated Xavier
# init on the convolutions, and PyTorch's default init on the classifier.
DEFAULT_INIT = "xavier_uniform"
DEFAULT_FC_INIT = "pytorch_default"
DEFAULT_SHORTCUT = "B"


def added(default, neutral=MISSING):
    """A config field added after runs were stored: its value `neutral` (default: its `default`) is
    what every run stored before it had, and is left out of a run's identity (`identity`), so that
    those runs keep their keys. A later change of the default is a change of identity, as it must be."""
    return field(default=default, metadata={"neutral": default if neutral is MISSING else neutral})


def identity(config) -> dict:
    """The fields that identify a stored run of `config`: all of them, except fields added later
    (`added`) while they hold their neutral value."""
    return {f.name: getattr(config, f.name) for f in fields(config)
            if "neutral" not in f.metadata or getattr(config, f.name) != f.metadata["neutral"]}


def stored_config(cls, values: dict):
    """The config of class `cls` that a stored provenance's "config" describes: fields added since
    it was stored take their neutral value (what it ran with), JSON lists become tuples."""
    neutral = {f.name: f.metadata["neutral"] for f in fields(cls) if "neutral" in f.metadata}
    return cls(**{**neutral, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}})


def check_fields(config) -> None:
    """Type-check every field of a config dataclass against its annotation: bool is not an int,
    an int is a float, floats are finite, tuples hold their element type. Raises a ValueError
    naming the field, the bad value and the expected type."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if not _is_instance(value, hints[f.name]):
            raise ValueError(f"{type(config).__name__}.{f.name} must be {_type_name(hints[f.name])}, "
                             f"got {value!r} ({type(value).__name__})")


def _is_instance(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_instance(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return f"a tuple of {_type_name(args[0])}"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {int: "an int", float: "a finite number", bool: "True or False", str: "a string",
            type(None): "None"}.get(hint, hint.__name__)


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "resnet110"          # see shared.models.ARCHS
    bn: bool = True                  # False: every BatchNorm layer removed
    init: str = DEFAULT_INIT         # see shared.models.INITS
    fc_init: str = added(DEFAULT_FC_INIT, neutral="same")  # the classifier's: "same" as `init`, or one of INITS
    shortcut: str | None = added(DEFAULT_SHORTCUT, neutral=None)  # CIFAR ResNets: "A" or "B" (SHORTCUTS)
    lr: float = 0.1                  # initial learning rate
    epochs: int = 165                # initial schedule length (doubled until plateau)
    max_epochs: int = 2640           # cap of the doubling rule (165 * 16); = epochs disables it
    plateau_window: int = 10         # epochs per window compared by the plateau test
    plateau_rel_tol: float = 0.02    # plateau: last window's mean train loss improves < this fraction
    lr_drops: tuple[float, ...] = (0.5, 0.75)  # fractions of the epochs after which lr /= 10
    lr_drop_factor: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    train_subset: int | None = None  # class-balanced subset of the training set (reduced presets)
    test_subset: int | None = None   # class-balanced subset of the test set (smoke only)
    steps_per_epoch: int | None = None  # cap on mini-batches per epoch (smoke only)
    precision: str = "fp32"          # fp32 (TF32 off) | tf32 | bf16 (autocast)
    divergence_loss: float = 1e3     # a mini-batch loss above this (or non-finite) = diverged
    eval_batch_size: int = 1000
    record_step_losses: int = added(0)  # store every step's loss for this many first epochs
    residual: str = added("plain")   # RESIDUALS: "skipinit" / "fixup" (without BN) instead of the plain blocks
    # diverged: a loss above max(divergence_loss, this x the initial loss), or non-finite (shared.train)
    divergence_factor: float = added(10.0)
    divergence_check_every: int = added(10)  # steps between the in-epoch checks that stop a diverged epoch
    chance_accuracy: float = added(0.15)     # a final test accuracy at or below this is "at chance"
    # after each epoch, dead ReLUs and the logits' spread on this many test images (shared.health); 0: not measured
    record_health: int = added(0)
    # an ablation, not the paper's protocol: the first epochs at lr / 10 before the schedule's rate
    # (He et al. 2016, Sec. 4.2, warm ResNet-110 up at 0.01 for about 400 steps, one epoch here)
    warmup_epochs: int = added(0)

    def __post_init__(self):
        check_fields(self)
        check_network(self)
        # normalised once, while the frozen config is constructed (nothing changes it afterwards)
        object.__setattr__(self, "shortcut", canonical_shortcut(self.arch, self.shortcut))
        if self.residual != "plain" and self.bn:
            raise ValueError(f"residual {self.residual!r} is a network without BN: set bn=False")
        check_choice("precision", self.precision, PRECISIONS)
        _check_positive(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size,
                        plateau_window=self.plateau_window, eval_batch_size=self.eval_batch_size,
                        divergence_loss=self.divergence_loss, lr_drop_factor=self.lr_drop_factor,
                        divergence_factor=self.divergence_factor,
                        divergence_check_every=self.divergence_check_every)
        if not 0 <= self.chance_accuracy < 1:
            raise ValueError(f"chance_accuracy must be in [0, 1), got {self.chance_accuracy!r}")
        for name in ("momentum", "weight_decay", "plateau_rel_tol", "record_step_losses", "record_health",
                     "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_epochs < self.epochs:
            raise ValueError(f"max_epochs ({self.max_epochs}) must be >= epochs ({self.epochs})")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if list(self.lr_drops) != sorted(self.lr_drops) or not all(0 < f < 1 for f in self.lr_drops):
            raise ValueError(f"lr_drops must be increasing fractions in (0, 1), got {self.lr_drops}")
        for name in ("train_subset", "test_subset", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None:
                _check_positive(**{name: value})


def check_network(cfg) -> None:
    """Validate the network fields shared by training and probe configs (arch, init, fc_init,
    shortcut, residual); a pure check: `canonical_shortcut` gives the one spelling the configs store."""
    check_choice("arch", cfg.arch, ARCHS)
    check_choice("init", cfg.init, INITS)
    check_choice("fc_init", cfg.fc_init, FC_INITS)
    valid = (None, "B") if cfg.arch == "resnet101" else (None, *SHORTCUTS)
    check_choice(f"shortcut for {cfg.arch}", cfg.shortcut, valid)
    check_choice("residual", cfg.residual, RESIDUALS)
    if cfg.residual != "plain":
        check_choice(f"arch for residual {cfg.residual!r}", cfg.arch, [a for a in ARCHS if a in CIFAR_DEPTHS])
    if cfg.residual == "fixup":
        check_choice("shortcut for fixup (the authors' option A)", cfg.shortcut, (None, "A"))


def canonical_shortcut(arch: str, shortcut: str | None) -> str | None:
    """One spelling per network, so that a network has one identity (and one stored key): None is
    the architecture's standard shortcut (option A for the CIFAR ResNets, torchvision's projections,
    "B", for ResNet-101), which may also be written out."""
    return None if shortcut == ("B" if arch == "resnet101" else "A") else shortcut


@dataclass(frozen=True)
class ProbeConfig:
    """The network an at-initialisation experiment measures, and its mini-batches (shared.experiments)."""
    arch: str = "resnet110"          # see shared.models.ARCHS
    init: str = DEFAULT_INIT         # see shared.models.INITS
    batch_size: int = 128
    train_subset: int | None = None  # class-balanced subset of the training set (smoke only)
    fc_init: str = added(DEFAULT_FC_INIT, neutral="same")  # the classifier's: "same" as `init`, or one of INITS
    shortcut: str | None = added(DEFAULT_SHORTCUT, neutral=None)  # CIFAR ResNets: "A" or "B" (SHORTCUTS)
    residual: str = added("plain")   # RESIDUALS: "skipinit" / "fixup" measure that network alone (no BN)

    def __post_init__(self):
        check_fields(self)
        check_network(self)
        # normalised once, while the frozen config is constructed (nothing changes it afterwards)
        object.__setattr__(self, "shortcut", canonical_shortcut(self.arch, self.shortcut))
        check_positive_fields(self)


# Probe-config fields that must be positive wherever they appear (every element, for tuples)
POSITIVE = {"batch_size", "train_subset", "layer", "bins", "epoch_batches", "layers", "lr", "lr_bn",
            "lr_no_bn", "probe_batches", "sizes", "fractions", "n", "depths", "samples", "first_layer",
            "layer_step", "steps", "health_every", "health_images"}


def check_positive_fields(cfg) -> None:
    """Every field of `cfg` named in POSITIVE that is set must be positive (each element of a tuple)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if f.name in POSITIVE and value is not None and not all(v > 0 for v in values):
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be positive, got {value!r}")


def network_fields(cfg) -> dict:
    """The keyword arguments of `shared.models.build_model` that `cfg` sets."""
    return dict(arch=cfg.arch, init=cfg.init, fc_init=cfg.fc_init, shortcut=cfg.shortcut, residual=cfg.residual)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


# Fig 1 on 2 CPU cores: epochs of the full-data `cpu` preset, chosen so that a run with BN takes at
# most 75 minutes on 2 idle cores in bf16 (measured: 214-277 s an epoch with its evaluation)
CPU_EPOCHS = 15

TRAIN_PRESETS = {
    # seconds on CPU: a few mini-batches of a small network, no doubling
    "smoke": TrainConfig(arch="resnet20", epochs=2, max_epochs=2, train_subset=200,
                         test_subset=100, steps_per_epoch=3, eval_batch_size=100),
    # Fig 1 on 2 CPU cores: the paper's ResNet-110, rates, batch, momentum, weight decay and 50 % /
    # 75 % drops on the full training and test sets, for CPU_EPOCHS epochs without doubling, in bf16
    # (autocast per step: benchmarks/precision_ab.py checks that it moves no conclusion)
    "cpu": TrainConfig(epochs=CPU_EPOCHS, max_epochs=CPU_EPOCHS, precision="bf16"),
    # the earlier preview on 2 CPU cores, kept because the stored runs of the depth ladder and the
    # normalisation-free networks used it: the same network and schedule on 5,000 training
    # images (500 per class) for 10 epochs (400 steps) and 2,000 test images, in fp32
    "preview": TrainConfig(epochs=10, max_epochs=10, train_subset=5_000, test_subset=2_000),
    # GPU: ResNet-110 on a shortened schedule with the same 50 % / 75 % drops, no doubling
    "quick": TrainConfig(epochs=40, max_epochs=40),
    # the paper's protocol
    "paper": TrainConfig(),
}


def train_config(preset: str = "paper", **overrides) -> TrainConfig:
    """The named preset with some fields replaced, e.g. `train_config("paper", bn=False, lr=1e-4)`."""
    check_choice("preset", preset, TRAIN_PRESETS)
    for name in overrides:
        check_choice("TrainConfig field", name, [f.name for f in fields(TrainConfig)])
    return replace(TRAIN_PRESETS[preset], **overrides)


# The results-store experiment that holds every training run (Fig 1 and the sweep share it)
TRAINING_EXPERIMENT = "training"


def setting_name(cfg: TrainConfig) -> str:
    return f"{'BN' if cfg.bn else 'no BN'}, lr {cfg.lr:g}"


# The at-initialisation experiments' presets: each a whole config per experiment
# (shared.experiments.PRESETS); "paper" is the paper's setup, "smoke" a seconds-long check
PROBE_PRESETS = ("smoke", "paper")
