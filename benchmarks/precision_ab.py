"""Precision A/B: do TF32 or bf16 change Fig 1's outcome beyond the seed-to-seed spread?

Trains Fig 1's six settings under a preset (default `quick`, a short schedule) in each precision
for several seeds, through the results store (experiment "training", so fp32 runs are Fig 1's own
and every run is resumable), then prints per setting and precision the final test accuracy
(mean and std over seeds), how many runs diverged and at which steps, and whether the difference
to fp32 exceeds twice the seed-to-seed std of fp32. fp16 with loss scaling is deliberately not
offered: the scaler skips non-finite steps, which hides the divergence the paper studies.

    python benchmarks/precision_ab.py --preset quick --seeds 0 1 2 --out ab.json   # on a GPU
"""

import argparse
import json
from pathlib import Path

import numpy as np

from shared.config import PRECISIONS, TRAINING_EXPERIMENT, fig1_grid, setting_name
from shared.train import run_grid


def summarise(runs: list[dict]) -> dict:
    """Final test accuracy over the completed runs and the divergence steps of the others."""
    final = [r["result"]["metrics"][-1]["test_acc"] for r in runs if r["result"]["status"] == "completed"]
    diverged = sorted(r["result"]["diverged_step"] for r in runs if r["result"]["status"] == "diverged")
    return {"seeds": len(runs), "test_acc_mean": float(np.mean(final)) if final else None,
            "test_acc_std": float(np.std(final)) if final else None, "diverged_steps": diverged}


def verdict(row: dict, fp32: dict) -> str:
    if bool(row["diverged_steps"]) != bool(fp32["diverged_steps"]):
        return "differs: divergence"
    if row["test_acc_mean"] is None or fp32["test_acc_mean"] is None:
        return "same (all diverged)"
    spread = max(2 * fp32["test_acc_std"], 1e-9)
    return "differs" if abs(row["test_acc_mean"] - fp32["test_acc_mean"]) > spread else "within seed spread"


def precision_ab(preset: str, seeds: list[int], precisions: list[str], data_dir=None, device=None,
                 together: int = 1, settings: int = 6) -> list[dict]:
    rows = []
    for precision in precisions:
        grid = fig1_grid(preset, precision=precision)[:settings]
        by_seed = [run_grid(grid, seed, TRAINING_EXPERIMENT, data_dir, device=device, progress=False,
                            together=together) for seed in seeds]
        for i, cfg in enumerate(grid):
            runs = [seed_runs[i] for seed_runs in by_seed]
            rows.append({"setting": setting_name(cfg), "precision": precision, **summarise(runs)})
    fp32 = {r["setting"]: r for r in rows if r["precision"] == "fp32"}
    for row in rows:
        row["vs_fp32"] = verdict(row, fp32[row["setting"]]) if row["setting"] in fp32 else "no fp32 run"
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--settings", type=int, default=6, help="the first N of Fig 1's settings")
    parser.add_argument("--together", type=int, default=1, help="runs trained at once")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = precision_ab(args.preset, args.seeds, args.precisions, args.data_dir, args.device,
                        args.together, args.settings)
    for r in rows:
        acc = "diverged" if r["test_acc_mean"] is None else f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}"
        print(f"{r['setting']:18s} {r['precision']:5s} {acc:20s} diverged at {r['diverged_steps']}  {r['vs_fp32']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"preset": args.preset, "seeds": args.seeds, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
