"""The at-initialisation experiments: the registry of each one's config and measure function
(which live in its figure's module under `shared.figures`), their named presets, and the command
line that computes stored runs. A measure function turns (config, data, seed) into a small
JSON-able result for the results store; the networks and the mini-batch it measures are
`shared.atinit`'s.
"""

import argparse
import time

from .compute import RunContext, measured
from .cli import literal_value, seed_arg
from .config import PROBE_PRESETS, check_choice
from .figures import collapse, fig2, fig3, fig4, fig5, fig6, fig7, signal_propagation, table1
from .figures.protocol import SMOKE_NETWORK  # noqa: F401 (re-exported)

# name -> its measurement (`shared.figures.protocol.Measurement`: config presets, measure function),
# each owned by its figure's module
EXPERIMENTS = {m.name: m for m in (fig2.MEASUREMENT, fig3.MEASUREMENT, fig4.MEASUREMENT, fig5.MEASUREMENT,
                                   fig6.MEASUREMENT, fig7.MEASUREMENT, table1.MEASUREMENT,
                                   signal_propagation.MEASUREMENT,
                                   collapse.MEASUREMENT)}  # collapse: beyond the paper, the first updates
# preset -> experiment -> its config under that preset (read from the figures' own presets)
PRESETS = {preset: {name: m.presets[preset] for name, m in EXPERIMENTS.items()} for preset in PROBE_PRESETS}


def experiment_config(experiment: str, preset: str = "paper", **overrides):
    """The config of `experiment` under `preset`, with fields replaced by `overrides`
    (`Measurement.config`)."""
    check_choice("experiment", experiment, EXPERIMENTS)
    return EXPERIMENTS[experiment].config(preset, **overrides)


def run_experiment(experiment: str, cfg, seed: int = 0, ctx: RunContext | None = None) -> dict:
    """The stored run of `experiment` for (cfg, seed), computed (and stored) if missing."""
    m = EXPERIMENTS[experiment]
    return measured(experiment, cfg, seed, m.measure, ctx, needs_data=m.needs_data)


def main(argv: list[str] | None = None) -> None:
    """Compute stored runs from the command line, e.g.
    `python -m shared.experiments fig2_gradients --seeds 0 1 2 --set arch=resnet101 init=xavier_normal`."""
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
        run_experiment(args.experiment, cfg, seed, RunContext(data_dir=args.data_dir, recompute=args.recompute))
        print(f"{args.experiment} seed {seed} {overrides}: {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
