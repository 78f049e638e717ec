"""The training command: `python -m shared.train GRID ... --preset P --seeds S ...` trains grids of
runs into the results store, in this process (`shared.train.runner.run_grid`) or as jobs
(`shared.launch`), and `--status` lists them. The entry point: it makes the run context and calls
down; nothing below imports it."""

import argparse
import time

from ..cli import device_arg, positive_int_arg, seed_arg
from ..compute import RunContext, default_device
from ..config import ARCHS, PRECISIONS, TRAIN_PRESETS, TRAINING_EXPERIMENT, setting_name
from ..grids import GRIDS
from ..launch import LAUNCHERS, LaunchOptions, Run, format_status, launch, status
from ..precision import AUTO, BF16_MIN_SPEEDUP, resolve_precision
from .pace import SlowPrecisionError, check_pace
from .runner import run_grid


def command_line():
    """The training command's arguments (`main`)."""
    parser = argparse.ArgumentParser(prog="python -m shared.train", description=main.__doc__)
    parser.add_argument("grids", nargs="+", choices=sorted(GRIDS))
    parser.add_argument("--preset", default="cpu", choices=list(TRAIN_PRESETS))
    parser.add_argument("--seeds", type=seed_arg, nargs="+", default=[0])
    parser.add_argument("--rates-per-decade", type=int, default=2, choices=(1, 2),
                        help="sweep only: 2, 1 and 3 times each power of ten; 1, the powers of ten")
    parser.add_argument("--epochs", type=positive_int_arg, default=None,
                        help="sweep: the preset's schedule cut to this many epochs (default: the "
                             "preset's sweep budget, grids.SWEEP_EPOCHS: cpu 5; else its own); start: "
                             "the runs' length (default: grids.START_RUNS'; a longer run continues a "
                             "stored shorter one)")
    parser.add_argument("--archs", nargs="+", default=None, choices=ARCHS, metavar="ARCH",
                        help="only the grids' runs of these networks")
    parser.add_argument("--together", type=positive_int_arg, default=1, help="runs trained as one stacked network")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--precision", default=None, choices=(*PRECISIONS, AUTO),
                        help="instead of the preset's (bf16 for cpu, else fp32): auto is bf16 on a CPU whose "
                             f"bf16 matrix product runs at least {BF16_MIN_SPEEDUP}x as fast as fp32's, else fp32")
    parser.add_argument("--device", type=device_arg, default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--settings", nargs="+", default=None, metavar="SETTING",
                        help='only these settings of the grids, e.g. "BN, lr 0.1" "no BN, lr 0.0001"')
    jobs = parser.add_argument_group("jobs (shared.launch; default: train in this process)")
    defaults = LaunchOptions()
    jobs.add_argument("--launcher", default=None, choices=LAUNCHERS,
                      help="slurm: a job array; local: worker processes; debug: jobs in this process")
    jobs.add_argument("--status", action="store_true", help="list the grids' stored, running, failed, missing runs")
    jobs.add_argument("--max-parallel", type=positive_int_arg, default=defaults.max_parallel,
                      help="jobs at once (SLURM array parallelism, local workers)")
    jobs.add_argument("--time-min", type=positive_int_arg, default=defaults.time_min,
                      help="a job's time limit in minutes (SLURM requeues it from its checkpoint)")
    jobs.add_argument("--partition", default=None, help="SLURM partition")
    jobs.add_argument("--gpus-per-job", type=int, default=defaults.gpus_per_job, help="SLURM")
    jobs.add_argument("--cpus-per-job", type=positive_int_arg, default=defaults.cpus_per_job, help="SLURM")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Train a grid of runs into the results store, on the GPU if there is one, resumable, e.g.
    `python -m shared.train fig1 sweep divergence --preset cpu --seeds 0 1` or, on a GPU,
    `python -m shared.train fig1 --preset quick --seeds 0 1 --together 6 --compile`; as SLURM
    jobs with `--launcher slurm` (`shared.launch`), followed with `--status`."""
    parser = command_line()
    args = parser.parse_args(argv)
    overrides = {}
    if args.precision is not None:
        overrides["precision"] = resolve_precision(args.precision, args.device or default_device())
    own = {"sweep": {"rates_per_decade": args.rates_per_decade, "epochs": args.epochs},
           "start": {"epochs": args.epochs}}
    grids = [(name, seed, GRIDS[name](args.preset, **overrides, **own.get(name, {})))
             for seed in args.seeds for name in args.grids]
    if args.archs:
        grids = [(name, seed, [c for c in grid if c.arch in args.archs]) for name, seed, grid in grids]
    if args.settings:
        names = {setting_name(cfg) for _, _, grid in grids for cfg in grid}
        for wanted in args.settings:
            if wanted not in names:
                parser.error(f"unknown setting {wanted!r}; valid: {', '.join(sorted(names))}")
        grids = [(name, seed, [c for c in grid if setting_name(c) in args.settings]) for name, seed, grid in grids]
    slow_ok = args.precision == "bf16"  # asked for explicitly: started even where it crawls
    ctx = RunContext(data_dir=args.data_dir, device=args.device, compile=args.compile)
    if args.launcher:  # before any job starts: no silent slow path (`shared.train.pace`)
        missing = [cfg for _, seed, grid in grids for cfg in grid
                   if ctx.store.get(TRAINING_EXPERIMENT, cfg, seed) is None]
        try:
            check_pace(missing, args.device or default_device(), slow_ok)
        except SlowPrecisionError as error:
            parser.exit(2, f"{parser.prog}: {error}\n")
    if args.status or args.launcher:
        runs = list(dict.fromkeys(Run(cfg, seed) for _, seed, grid in grids for cfg in grid))
        if args.launcher:
            options = LaunchOptions(args.launcher, args.max_parallel, args.time_min, args.partition,
                                    args.gpus_per_job, args.cpus_per_job)
            jobs = launch(runs, TRAINING_EXPERIMENT, options, ctx)
            print(f"{len(jobs)} {args.launcher} jobs" + (f": {', '.join(j.job_id for j in jobs)}" if jobs else ""))
        print(format_status(status(runs, TRAINING_EXPERIMENT, ctx.store)), flush=True)
        return
    for name, seed, grid in grids:
        start = time.perf_counter()
        try:
            runs = run_grid(grid, seed, TRAINING_EXPERIMENT, ctx, args.together, slow_ok)
        except SlowPrecisionError as error:
            parser.exit(2, f"{parser.prog}: {error}\n")
        statuses = ", ".join(f"{c.lr:g}{'' if c.bn else ' no BN'}: {r.result['status']}"
                             for c, r in zip(grid, runs))
        print(f"{name} preset {args.preset} seed {seed}: {len(runs)} runs in "
              f"{time.perf_counter() - start:.0f} s ({statuses})", flush=True)


if __name__ == "__main__":
    main()
