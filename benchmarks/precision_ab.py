"""Precision A/B: does bf16 (autocast per step) move a conclusion of the paper against strict fp32?

Two checks, each a set of stored training runs (experiment "training", resumable) in both
precisions, compared run by run (same config but the precision, same seed):

  divergence  ResNet-110 without BN at Fig 1's divergence rates (0.1, 0.01, 0.003, 1e-3), the first
              200 steps on the full training set (`shared.config.divergence_grid`): both precisions
              must give the same verdict (diverged or not), the same step of divergence and the same
              first step above the paper's 1e3 (each within `STEP_TOLERANCE`);
  learning    Fig 1's four learning settings (BN at 0.1, 0.003, 1e-4; no BN at 1e-4), the first
              `LEARNING_EPOCHS` epochs on the full training set at the initial rate (the schedule's
              drops come later): per epoch, train loss within `LOSS_RTOL` relative and test accuracy
              within `ACC_ATOL`.

A check `agree`s when every pair of runs does; it is null while runs are missing (listed). Without
`--train` the script only reads the store. On the CPU (2 cores), the divergence check takes about
ten minutes per precision for 3 seeds, the learning check about 8 (bf16) and 15 (fp32) minutes per
run and seed.

    python benchmarks/precision_ab.py --train --seeds 0 1 --out benchmarks/results/precision_ab_cpu.json
"""

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.config import (DIVERGENCE_RATES, FIG1_SETTINGS, TRAINING_EXPERIMENT, divergence_grid,
                           setting_name, train_config)
from shared.results import Store, write_json
from shared.train import run_training

CHECKS = ("divergence", "learning")
PRECISIONS = ("fp32", "bf16")    # the A and the B
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


CONFIGS = {"divergence": divergence_configs, "learning": learning_configs}


@dataclass
class Pair:
    """One config and seed in both precisions, and whether they agree (None: a run is missing)."""
    check: str
    setting: str
    seed: int
    fp32: dict | None
    bf16: dict | None
    agree: bool | None = None
    why: list[str] = field(default_factory=list)


def summary(check: str, run: dict | None) -> dict | None:
    """What a check compares of a stored run."""
    if run is None:
        return None
    r = run["result"]
    if check == "divergence":
        return {"status": r["status"], "diverged_step": r["diverged_step"], "first_above_step": r["first_above_step"]}
    return {"status": r["status"], "train_loss": [m["train_loss"] for m in r["metrics"]],
            "test_acc": [m["test_acc"] for m in r["metrics"]]}


def differences(check: str, a: dict, b: dict) -> list[str]:
    """Why summaries `a` (fp32) and `b` (bf16) disagree; empty if they agree."""
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
    out = []
    for a_cfg, b_cfg in zip(*(CONFIGS[check](p) for p in PRECISIONS)):
        for seed in seeds:
            a, b = (summary(check, store.get(TRAINING_EXPERIMENT, c, seed)) for c in (a_cfg, b_cfg))
            pair = Pair(check, setting_name(a_cfg), seed, a, b)
            if a is not None and b is not None:
                pair.why = differences(check, a, b)
                pair.agree = not pair.why
            out.append(pair)
    return out


def report(seeds: dict[str, list[int]], store: Store) -> dict:
    """Per check (with its seeds): `agree` (None while runs are missing), the pairs, the missing runs."""
    checks = {}
    for check, check_seeds in seeds.items():
        rows = pairs(check, check_seeds, store)
        missing = [f"{r.setting} seed {r.seed} {p}" for r in rows for p in PRECISIONS if getattr(r, p) is None]
        agree = None if missing else all(r.agree for r in rows)
        checks[check] = {"agree": agree, "missing": missing, "pairs": [asdict(r) for r in rows]}
    return {"seeds": seeds, "step_tolerance": STEP_TOLERANCE, "loss_rtol": LOSS_RTOL, "acc_atol": ACC_ATOL,
            "learning_epochs": LEARNING_EPOCHS, "checks": checks}


def train_missing(checks: list[str], seeds: list[int], store: Store, data_dir=None, device=None,
                  on_run=None) -> None:
    """Train the checks' missing runs, fp32 and bf16 of one config and seed after another."""
    for check in checks:
        for seed in seeds:
            for cfgs in zip(*(CONFIGS[check](p) for p in PRECISIONS)):
                for cfg in cfgs:
                    if store.get(TRAINING_EXPERIMENT, cfg, seed) is None:
                        run_training(cfg, seed, TRAINING_EXPERIMENT, data_dir, device=device,
                                     progress=False, store=store)
                        if on_run is not None:
                            on_run(cfg, seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--divergence-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", nargs="*", choices=CHECKS, default=None,
                        help="train the missing runs of these checks (all if none is named) first")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    store = Store()
    seeds = {"divergence": args.divergence_seeds, "learning": args.seeds}

    def write(*_):
        result = report(seeds, store)
        write_json(args.out, result)
        return result

    if args.train is not None:
        for check in args.train or CHECKS:
            train_missing([check], seeds[check], store, args.data_dir, args.device, on_run=write)
    result = write()["checks"]
    for check, c in result.items():
        print(f"{check}: agree {c['agree']}" + (f" ({len(c['missing'])} runs missing)" if c["missing"] else ""))
        for p in c["pairs"]:
            if p["agree"] is False:
                print(f"  {p['setting']} seed {p['seed']}: " + "; ".join(p["why"]))
    return result


if __name__ == "__main__":
    main()
