"""The training grids, each a list of `TrainConfig`s by name (`python -m shared.train GRID ...`):
Fig 1's runs, the divergence probes, the learning-rate sweep, the warm-up ablation, the network
question and the paper's schedule truncated. Each grid is a function of a preset
(`shared.config.TRAIN_PRESETS`) and the few fields it varies."""

from .config import DEFAULT_FC_INIT, DEFAULT_SHORTCUT, TRAIN_PRESETS, TrainConfig, check_choice, train_config


# Fig 1: (BN?, learning rate). The paper shows the first four; without BN the larger rates
# diverge ("not shown"), and we show how.
FIG1_SETTINGS: tuple[tuple[bool, float], ...] = (
    (True, 0.1), (True, 0.003), (True, 1e-4), (False, 1e-4), (False, 0.003), (False, 0.1))


# Where does ResNet-110 without BN start to diverge? Fig 1's no-BN rates above 1e-4 and the decade
# between, each trained for its first DIVERGENCE_STEPS steps on the full training set.
DIVERGENCE_RATES: tuple[float, ...] = (0.1, 0.01, 0.003, 0.001)
DIVERGENCE_STEPS = 200
DIVERGENCE_TEST_IMAGES = 2_000  # a probe's one evaluation (after its steps) is on this many test images at most


def sweep_rates(per_decade: int = 2) -> tuple[float, ...]:
    """The learning-rate sweep's rates from 1e-5 to 1: with 2 per decade, 1 and 3 times each power
    of ten, i.e. about half-decade steps (3 ~ 10 ** 0.5) that contain Fig 1's rates exactly, so the
    sweep reuses Fig 1's runs; with 1 per decade, the powers of ten alone."""
    check_choice("rates per decade", per_decade, (1, 2))
    mantissas = (1, 3)[:per_decade]
    return tuple(float(f"{m}e{e}") for e in range(-5, 0) for m in mantissas) + (1.0,)


def fig1_grid(preset: str = "paper", **overrides) -> list[TrainConfig]:
    """Fig 1's training runs under `preset`, in FIG1_SETTINGS order."""
    return [train_config(preset, bn=bn, lr=lr, **overrides) for bn, lr in FIG1_SETTINGS]


def divergence_config(preset: str = "paper", **overrides) -> TrainConfig:
    """A divergence probe: the first DIVERGENCE_STEPS steps on the full training set at a constant
    rate, every step's loss recorded (the preset's network and rate unless `overrides` say). A
    preset that caps its epochs' steps (smoke) keeps its cap and its training subset: seconds."""
    base = train_config(preset)
    test_subset = min(base.test_subset or DIVERGENCE_TEST_IMAGES, DIVERGENCE_TEST_IMAGES)
    capped = base.steps_per_epoch is not None
    fields = dict(epochs=1, max_epochs=1, steps_per_epoch=min(DIVERGENCE_STEPS, base.steps_per_epoch or DIVERGENCE_STEPS),
                  lr_drops=(), train_subset=base.train_subset if capped else None, test_subset=test_subset,
                  record_step_losses=1)
    return train_config(preset, **{**fields, **overrides})


def divergence_grid(preset: str = "paper", **overrides) -> list[TrainConfig]:
    """The no-BN runs at DIVERGENCE_RATES (`divergence_config`): where, and how, the network
    without BN diverges."""
    return [divergence_config(preset, lr=lr, **{"bn": False, **overrides}) for lr in DIVERGENCE_RATES]


# The sweep's budget where it is not the preset's own schedule: on the full data of the `cpu`
# preset, 22 runs of Fig 1's 15 epochs would take about 13 hours on 2 cores, so its sweep cuts the
# schedule to 5 epochs (the same drops at 50 % and 75 %): a run with BN about 15-20 minutes on 2 idle
# cores (Fig 1's epochs), 29-37 minutes measured as one of two one-thread jobs
SWEEP_EPOCHS = {"cpu": 5}


def sweep_grid(preset: str = "paper", rates_per_decade: int = 2, epochs: int | None = None,
               **overrides) -> list[TrainConfig]:
    """Every rate of `sweep_rates(rates_per_decade)`, with BN and without, on `preset`'s schedule
    cut to `epochs` epochs (the same drops, no doubling); None: the preset's sweep budget
    (SWEEP_EPOCHS: the `cpu` preset's full-data sweep at 5 epochs), else its own schedule."""
    epochs = epochs or SWEEP_EPOCHS.get(preset)
    if epochs is not None:
        overrides = {"epochs": epochs, "max_epochs": epochs, **overrides}
    return [train_config(preset, bn=bn, lr=lr, **overrides)
            for bn in (True, False) for lr in sweep_rates(rates_per_decade)]


# Fig 1's ablation of the start (notebook 01): BN at Fig 1's largest rate after a warm-up of
# WARMUP_EPOCHS epochs at lr / 10, as He et al. (2016, Sec. 4.2) trained ResNet-110. Not the paper's
# protocol: it asks how much of the short schedule's gap to the paper the slow start at 0.1 costs.
WARMUP_EPOCHS = 1


def warmup_grid(preset: str = "paper", **overrides) -> list[TrainConfig]:
    """BN at 0.1 with WARMUP_EPOCHS epochs at 0.01 first, the rest of `preset`'s schedule unchanged."""
    return [train_config(preset, bn=True, lr=0.1, warmup_epochs=WARMUP_EPOCHS, **overrides)]


# The network question (notebook 10, "does it train without BN at 1e-4?"): the default network and
# three other candidates of the shortcut (A: zero-padding, B: 1x1 convolution) x classifier init
# (the convolutions' Xavier, "same", or PyTorch's default) choice, each trained with and without BN
# at Fig 1's small rate for the paper protocol's first NETWORK_EPOCHS epochs (its rate is constant
# there), on the full training set, with every step's loss and the network's health recorded.
NETWORK_CANDIDATES: tuple[dict, ...] = (
    dict(shortcut=DEFAULT_SHORTCUT, fc_init=DEFAULT_FC_INIT),  # the default network
    dict(shortcut="A", fc_init="same"),
    dict(shortcut="A", fc_init="pytorch_default"),
    dict(shortcut="B", fc_init="same"),
)
NETWORK_LR = 1e-4
NETWORK_EPOCHS = 2
HEALTH_IMAGES = 500


def network_config(candidate: dict, bn: bool, preset: str = "paper", **overrides) -> TrainConfig:
    """One run of the network question (NETWORK_CANDIDATES): `candidate`'s network at NETWORK_LR,
    the first NETWORK_EPOCHS epochs of `preset` at a constant rate, per-step losses and health."""
    fields = dict(bn=bn, lr=NETWORK_LR, epochs=NETWORK_EPOCHS, max_epochs=NETWORK_EPOCHS, lr_drops=(),
                  record_step_losses=NETWORK_EPOCHS, record_health=HEALTH_IMAGES, **candidate)
    return train_config(preset, **{**fields, **overrides})


def network_grid(preset: str = "paper", **overrides) -> list[TrainConfig]:
    """The network question's runs: every candidate without BN first (the question), then with BN."""
    return [network_config(c, bn, preset, **overrides) for bn in (False, True) for c in NETWORK_CANDIDATES]


# The first epochs of the paper's protocol, truncated instead of compressed (notebook 01): the paper
# trains at its initial rate for the first 50 % of at least 165 epochs (its doubling rule makes that
# about 1,200 epochs at 1e-4), so a constant-rate run of E epochs on the full data, batch 128,
# momentum 0.9, weight decay 5e-4 is exactly the start of the paper's own run. Without BN at 1e-4,
# Fig 1's compressed runs settle near the loss of a constant guess: is that a plateau the paper's
# long first phase passes through? Each run records its health after every epoch, and is extended
# from E to more epochs by continuing from where it stopped (`shared.train.runner`).
START_LR = 1e-4
# (arch, BN?, default epochs): ResNet-110 without BN (the question), the depth series without BN,
# and ResNet-110 with BN beside it
START_RUNS: tuple[tuple[str, bool, int], ...] = (
    ("resnet110", False, 60), ("resnet56", False, 30), ("resnet32", False, 30), ("resnet20", False, 30),
    ("resnet110", True, 30))


def start_config(arch: str, bn: bool, epochs: int, preset: str = "paper", **overrides) -> TrainConfig:
    """The first `epochs` epochs of the paper's protocol at START_LR: `preset`'s data, batch and
    precision, a constant rate (no drop, no doubling), the network's health after every epoch."""
    fields = dict(arch=arch, bn=bn, lr=START_LR, epochs=epochs, max_epochs=epochs, lr_drops=(),
                  record_health=HEALTH_IMAGES)
    return train_config(preset, **{**fields, **overrides})


def start_grid(preset: str = "paper", epochs: int | None = None, **overrides) -> list[TrainConfig]:
    """START_RUNS, each for `epochs` epochs (None: its own default; a preset that caps its epochs'
    steps, smoke, its own epochs)."""
    own = TRAIN_PRESETS[preset].epochs if TRAIN_PRESETS[preset].steps_per_epoch else None
    return [start_config(arch, bn, epochs or own or default, preset, **overrides) for arch, bn, default in START_RUNS]


def is_truncated(cfg: TrainConfig) -> bool:
    """Whether `cfg`'s run is the first `cfg.epochs` whole epochs of a constant-rate run, so that a
    longer run of it continues this one (its first epochs are this run's, to the bit)."""
    return (not cfg.lr_drops and cfg.warmup_epochs == 0 and cfg.max_epochs == cfg.epochs
            and cfg.steps_per_epoch is None)


# The training grids by name (`python -m shared.train GRID ...`)
GRIDS = {"fig1": fig1_grid, "sweep": sweep_grid, "divergence": divergence_grid, "network": network_grid,
         "warmup": warmup_grid, "start": start_grid}
