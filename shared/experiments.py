"""The at-initialisation experiments: the registry of each one's config and measure function
(which live in its figure's module under `shared.figures`), their named presets, and the command
line that computes stored runs. A measure function turns (config, data, seed) into a small
JSON-able result for the results store; the networks and the mini-batch it measures are
`shared.atinit`'s.
"""

import argparse
import time
from dataclasses import fields, replace
from typing import get_args

from .atinit import first_batch, middle_layer, network_pair  # noqa: F401 (re-exported)
from .config import PROBE_PRESETS, ProbeConfig, check_choice, network_fields  # noqa: F401 (re-exported)
from .figures.collapse import EXPERIMENT as COLLAPSE, CollapseConfig, measure as measure_collapse
from .figures.signal_propagation import SignalConfig, measure_signal_propagation
from .figures.fig2 import GradientConfig, measure_gradients
from .figures.fig3 import FIG3_DIRECTIONS, FIG3_LAYOUTS, FIG3_STATES, RelativeLossConfig, measure_relative_loss  # noqa: F401
from .figures.fig4 import DivergingUpdateConfig, measure_diverging_update
from .figures.fig5 import FIG5_CHANNELS, DepthConfig, measure_depth_profile  # noqa: F401
from .figures.fig6 import LogitGradientConfig, measure_logit_gradients
from .figures.fig7 import SingularValueConfig, measure_singular_values
from .figures.table1 import ContributionConfig, measure_contributions
from .models import build_model, weight_layers
from .results import Store, get_or_measure


# name -> (config class, measure function)
EXPERIMENTS = {
    "fig2_gradients": (GradientConfig, measure_gradients),
    "fig3_relative_loss": (RelativeLossConfig, measure_relative_loss),
    "fig4_diverging_update": (DivergingUpdateConfig, measure_diverging_update),
    "fig5_depth_profile": (DepthConfig, measure_depth_profile),
    "fig6_logit_gradients": (LogitGradientConfig, measure_logit_gradients),
    "fig7_singular_values": (SingularValueConfig, measure_singular_values),
    "table1_contributions": (ContributionConfig, measure_contributions),
    "signal_propagation": (SignalConfig, measure_signal_propagation),
    COLLAPSE: (CollapseConfig, measure_collapse),  # beyond the paper: the first updates, step by step
}

# Each experiment's config under each preset (PROBE_PRESETS), whole: "paper" is the paper's setup
# (the classes' defaults); "smoke" runs in seconds on ResNet-20 and 200 training images, to check
# that everything runs. Layer lists are ResNet-110's, scaled to the network (`experiment_config`).
SMOKE_NETWORK = dict(arch="resnet20", batch_size=16, train_subset=200)
PRESETS = {
    "paper": {name: cls() for name, (cls, _) in EXPERIMENTS.items()},
    "smoke": {
        "fig2_gradients": GradientConfig(**SMOKE_NETWORK),
        "fig3_relative_loss": RelativeLossConfig(**SMOKE_NETWORK, sizes=12),
        "fig4_diverging_update": DivergingUpdateConfig(**SMOKE_NETWORK, fractions=5),
        "fig5_depth_profile": DepthConfig(**SMOKE_NETWORK),
        "fig6_logit_gradients": LogitGradientConfig(**SMOKE_NETWORK, epoch_batches=3),
        "fig7_singular_values": SingularValueConfig(n=64, samples=1),
        "table1_contributions": ContributionConfig(**SMOKE_NETWORK),
        "signal_propagation": SignalConfig(**SMOKE_NETWORK),
        COLLAPSE: CollapseConfig(**SMOKE_NETWORK, steps=6, health_every=3, health_images=32),
    },
}


def experiment_config(experiment: str, preset: str = "paper", **overrides):
    """The config of `experiment` under `preset`, with fields replaced by `overrides`.

    An override of None for a field that cannot be None (arch, init, ...) means "the preset's
    value": notebooks pass their `arch=None` parameter straight through. Layer lists given for
    ResNet-110 (Fig 4, Table 1) are scaled to the depth of another network, unless `layers` is
    overridden.
    """
    check_choice("experiment", experiment, EXPERIMENTS)
    check_choice("preset", preset, PROBE_PRESETS)
    cls = EXPERIMENTS[experiment][0]
    names = {f.name for f in fields(cls)}
    for name in overrides:
        check_choice(f"{cls.__name__} field", name, sorted(names))
    nullable = {f.name for f in fields(cls) if type(None) in get_args(f.type)}
    overrides = {k: v for k, v in overrides.items() if v is not None or k in nullable}
    cfg = replace(PRESETS[preset][experiment], **overrides)
    if "layers" in names and "layers" not in overrides and cfg.arch != "resnet110":
        depth = len(weight_layers(build_model(bn=False, **network_fields(cfg))))
        cfg = replace(cfg, layers=tuple(min(depth - 1, max(2, round(k * depth / 110))) for k in cfg.layers))
    return cfg


def run_experiment(experiment: str, cfg, seed: int = 0, data_dir=None, device=None,
                   recompute: bool = False, store: Store | None = None) -> dict:
    """The stored run of `experiment` for (cfg, seed), computed (and stored) if missing."""
    measure = EXPERIMENTS[experiment][1]
    if isinstance(cfg, SingularValueConfig):  # needs no data: compute directly
        return (store or Store()).get_or_compute(experiment, cfg, seed, lambda: measure(cfg, seed), "cpu",
                                    recompute=recompute)
    return get_or_measure(experiment, cfg, seed, lambda data: measure(cfg, data, seed), data_dir,
                          device, recompute, store)


def main(argv: list[str] | None = None) -> None:
    """Compute stored runs from the command line, e.g.
    `python -m shared.experiments fig2_gradients --seeds 0 1 2 --set arch=resnet101 init=xavier_normal`."""
    from .cli import literal_value, seed_arg

    parser = argparse.ArgumentParser(prog="python -m shared.experiments", description=main.__doc__)
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=seed_arg, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--recompute", action="store_true")
    args = parser.parse_args(argv)

    malformed = [item for item in args.set if "=" not in item]
    if malformed:
        parser.error(f"--set takes FIELD=VALUE pairs, got {' '.join(malformed)!r} "
                     f"(for example --set arch=resnet101 init=xavier_normal)")
    overrides = {k: literal_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    try:
        cfg = experiment_config(args.experiment, args.preset, **overrides)
    except ValueError as error:  # a bad field or value: one line naming it, not a traceback
        parser.error(str(error))
    for seed in args.seeds:
        start = time.perf_counter()
        run_experiment(args.experiment, cfg, seed, args.data_dir, recompute=args.recompute)
        print(f"{args.experiment} seed {seed} {overrides}: {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
