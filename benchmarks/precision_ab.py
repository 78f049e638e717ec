"""Precision A/B: does bf16 (autocast per step) move a conclusion of the paper against strict fp32?

Two checks, each a set of stored training runs (experiment "training", resumable) in both
precisions, compared run by run (same config but the precision, same seed):

  divergence  ResNet-110 without BN at Fig 1's divergence rates (0.1, 0.01, 0.003, 1e-3), the first
              200 steps on the full training set (`shared.grids.divergence_grid`): both precisions
              must give the same verdict (diverged or not), the same step of divergence and the same
              first step above the paper's 1e3 (each within `STEP_TOLERANCE`);
  learning    Fig 1's four learning settings (BN at 0.1, 0.003, 1e-4; no BN at 1e-4), the first
              `LEARNING_EPOCHS` epochs on the full training set at the initial rate (the schedule's
              drops come later): per epoch, train loss within `LOSS_RTOL` relative and test accuracy
              within `ACC_ATOL`.

  rounding    the control: the learning check's fp32 runs against the same runs in fp32 in the NCHW
              layout (experiment "training_nchw"), which sums the same products in another order.
              How far do two runs drift apart from rounding alone? A bf16 gap no larger than this
              is a gap that any change of summation order makes (`within_rounding`: every pair of
              the learning check agrees, or its bf16 gap is no larger than its own run's control).

A check `agree`s when every pair of runs does; it is null while runs are missing (listed). Without
`--train` the script only reads the store. On the CPU (2 cores), the divergence check takes about
ten minutes per precision for 3 seeds, the learning check about 8 (bf16) and 15 (fp32) minutes per
run and seed.

    python benchmarks/precision_ab.py --train --seeds 0 1 --out benchmarks/results/precision_ab_cpu.json
"""

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from shared.compute import RunContext
from shared.config import TRAINING_EXPERIMENT, setting_name, train_config
from shared.grids import FIG1_SETTINGS, divergence_grid
from shared.results import Store, write_json
from shared.train import run_training

CHECKS = ("divergence", "learning", "rounding")
PRECISIONS = ("fp32", "bf16")    # the A and the B of the precision checks
LEARNING_SETTINGS = FIG1_SETTINGS[:4]  # the four that train (without BN, 0.1 and 0.003 diverge)
LEARNING_EPOCHS = 2
STEP_TOLERANCE = 1     # steps
LOSS_RTOL = 0.05       # relative, per epoch's train loss
ACC_ATOL = 0.02        # absolute, per epoch's test accuracy


def divergence_configs(precision: str, preset: str = "cpu"):
    return divergence_grid(preset, precision=precision)


def learning_configs(precision: str):
    """Fig 1's learning settings for their first LEARNING_EPOCHS epochs: full data, constant rate."""
    return [train_config("paper", bn=bn, lr=lr, epochs=LEARNING_EPOCHS, max_epochs=LEARNING_EPOCHS,
                         lr_drops=(), precision=precision) for bn, lr in LEARNING_SETTINGS]


CONFIGS = {"divergence": divergence_configs, "learning": learning_configs, "rounding": learning_configs}


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: runs of a precision, in a memory layout, stored in an experiment."""
    name: str
    precision: str
    memory_format: str = "channels_last"
    experiment: str = TRAINING_EXPERIMENT


FP32, BF16 = Arm("fp32", "fp32"), Arm("bf16", "bf16")
FP32_NCHW = Arm("fp32 NCHW", "fp32", "nchw", "training_nchw")
ARMS = {"divergence": (FP32, BF16), "learning": (FP32, BF16), "rounding": (FP32, FP32_NCHW)}


@dataclass
class Pair:
    """One config and seed in both precisions, and whether they agree (None: a run is missing)."""
    check: str
    setting: str
    seed: int
    a: dict | None
    b: dict | None
    agree: bool | None = None
    why: list[str] = field(default_factory=list)


def summary(check: str, run: dict | None) -> dict | None:
    """What a check compares of a stored run."""
    if run is None:
        return None
    r = run.result
    if check == "divergence":
        return {"status": r["status"], "diverged_step": r["diverged_step"], "first_above_step": r["first_above_step"]}
    return {"status": r["status"], "train_loss": [m["train_loss"] for m in r["metrics"]],
            "test_acc": [m["test_acc"] for m in r["metrics"]]}


def differences(check: str, a: dict, b: dict) -> list[str]:
    """Why summaries `a` and `b` (fp32 and bf16, or the rounding control's two layouts) disagree;
    empty if they agree."""
    if a["status"] != b["status"]:
        return [f"status {a['status']} against {b['status']}"]
    why = []
    if check == "divergence":
        for key in ("diverged_step", "first_above_step"):
            x, y = a[key], b[key]
            if (x is None) != (y is None) or (x is not None and abs(x - y) > STEP_TOLERANCE):
                why.append(f"{key} {x} against {y}")
        return why
    for epoch, (x, y) in enumerate(zip(a["train_loss"], b["train_loss"]), 1):
        if x is None or y is None or abs(y - x) > LOSS_RTOL * abs(x):
            why.append(f"epoch {epoch} train loss {x} against {y}")
    for epoch, (x, y) in enumerate(zip(a["test_acc"], b["test_acc"]), 1):
        if x is None or y is None or abs(y - x) > ACC_ATOL:
            why.append(f"epoch {epoch} test accuracy {x} against {y}")
    return why


def pairs(check: str, seeds: list[int], store: Store) -> list[Pair]:
    arms = ARMS[check]
    out = []
    for a_cfg, b_cfg in zip(*(CONFIGS[check](arm.precision) for arm in arms)):
        for seed in seeds:
            a, b = (summary(check, store.get(arm.experiment, c, seed)) for arm, c in zip(arms, (a_cfg, b_cfg)))
            pair = Pair(check, setting_name(a_cfg), seed, a, b)
            if a is not None and b is not None:
                pair.why = differences(check, a, b)
                pair.agree = not pair.why
            out.append(pair)
    return out


def largest_accuracy_gap(rows: list[Pair]) -> float | None:
    """The largest |test accuracy a - b| over the pairs' epochs (None if no pair has both runs)."""
    gaps = [abs(x - y) for r in rows if r.a and r.b for x, y in zip(r.a["test_acc"], r.b["test_acc"])
            if x is not None and y is not None]
    return max(gaps) if gaps else None


def report(seeds: dict[str, list[int]], store: Store) -> dict:
    """Per check (with its seeds): `agree` (None while runs are missing), the pairs, the missing runs;
    where the rounding control has runs, `controlled_pairs`: per setting and seed that both checks
    have, whether the pair agrees, bf16's largest test-accuracy gap against fp32 and the control's
    (the same fp32 run in two layouts), and `within_rounding`: whether each pair that does not agree
    has a bf16 gap no larger than its own run's control gap (a gap larger than rounding alone makes
    on that run is one that bf16 made; a pair that agrees needs no control: at chance, say, two
    runs of 10.0 % and 10.1 % agree whatever their control's gap)."""
    checks, rows = {}, {}
    for check, check_seeds in seeds.items():
        rows[check] = pairs(check, check_seeds, store)
        arms = ARMS[check]
        missing = [f"{r.setting} seed {r.seed} {arm.name}" for r in rows[check]
                   for arm, side in zip(arms, (r.a, r.b)) if side is None]
        agree = None if missing else all(r.agree for r in rows[check])
        checks[check] = {"agree": agree, "arms": [asdict(arm) for arm in arms], "missing": missing,
                         "pairs": [asdict(r) for r in rows[check]]}
    if "learning" in rows and "rounding" in rows:
        control = {(r.setting, r.seed): r for r in rows["rounding"] if r.a and r.b}
        controlled = [{"pair": f"{r.setting} seed {r.seed}", "agree": r.agree, "bf16_gap": largest_accuracy_gap([r]),
                       "rounding_gap": largest_accuracy_gap([control[r.setting, r.seed]])}
                      for r in rows["learning"] if (r.setting, r.seed) in control and r.a and r.b]
        checks["learning"]["largest_test_acc_gap"] = largest_accuracy_gap(rows["learning"])
        checks["rounding"]["largest_test_acc_gap"] = largest_accuracy_gap(rows["rounding"])
        checks["learning"]["controlled_pairs"] = sorted(controlled, key=lambda c: c["pair"])
        checks["learning"]["within_rounding"] = (all(c["agree"] or c["bf16_gap"] <= c["rounding_gap"]
                                                     for c in controlled) if controlled else None)
    return {"seeds": seeds, "step_tolerance": STEP_TOLERANCE, "loss_rtol": LOSS_RTOL, "acc_atol": ACC_ATOL,
            "learning_epochs": LEARNING_EPOCHS, "checks": checks}


def train_missing(checks: list[str], seeds: list[int], ctx: RunContext, on_run=None,
                  settings: list[str] | None = None) -> None:
    """Train the checks' missing runs into `ctx.store`, both arms of one config and seed after
    another (only the `settings` named, e.g. "BN, lr 0.1", if given)."""
    for check in checks:
        arms = ARMS[check]
        for seed in seeds:
            for cfgs in zip(*(CONFIGS[check](arm.precision) for arm in arms)):
                if settings and setting_name(cfgs[0]) not in settings:
                    continue
                for arm, cfg in zip(arms, cfgs):
                    if ctx.store.get(arm.experiment, cfg, seed) is None:
                        run_training(cfg, seed, arm.experiment, replace(ctx, memory_format=arm.memory_format))
                        if on_run is not None:
                            on_run(cfg, seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--divergence-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounding-seeds", type=int, nargs="+", default=None,
                        help="the rounding control's seeds (default: --seeds); --train trains only these")
    parser.add_argument("--settings", nargs="+", default=None,
                        help='train only these settings, e.g. "BN, lr 0.1" (default: all)')
    parser.add_argument("--train", nargs="*", choices=CHECKS, default=None,
                        help="train the missing runs of these checks (all if none is named) first")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ctx = RunContext(data_dir=args.data_dir, device=args.device, progress=False)
    store = ctx.store
    seeds = {"divergence": args.divergence_seeds, "learning": args.seeds,
             "rounding": args.seeds if args.rounding_seeds is None else args.rounding_seeds}

    def write(*_):
        result = report(seeds, store)
        write_json(args.out, result)
        return result

    if args.train is not None:
        for check in args.train or CHECKS:
            train_missing([check], seeds[check], ctx, on_run=write, settings=args.settings)
    result = write()["checks"]
    for check, c in result.items():
        print(f"{check}: agree {c['agree']}" + (f" ({len(c['missing'])} runs missing)" if c["missing"] else "")
              + (f"; largest test-accuracy gap {c['largest_test_acc_gap']}" if c.get("largest_test_acc_gap") else "")
              + (f"; within rounding: {c['within_rounding']}" if "within_rounding" in c else ""))
        for p in c["pairs"]:
            if p["agree"] is False:
                print(f"  {p['setting']} seed {p['seed']}: " + "; ".join(p["why"]))
    return result


if __name__ == "__main__":
    main()
