"""Fig 3's probe: seconds per seed in the channels-last layout against the default NCHW.

Times `shared.figures.fig3.measure_relative_loss` (train each network of the pair at its normal
rate, probing the relative loss along the gradient at each probed mini-batch) in both layouts on
the same data, in one process, and checks that the layouts agree: the same first step above 1e3,
and on the first mini-batch the largest relative difference of the curves up to step 0.1 (where
the relative loss is below 1e3, and everywhere). The floor: the probe's forward FLOPs (sizes x probed mini-batches x networks forward passes, counted
by torch's FlopCounterMode) at the device's fp32 rate on a large matrix product. Usage:

    python benchmarks/fig3_probe.py --out fig3.json                          # ResNet-110, real data
    python benchmarks/fig3_probe.py --preset smoke --out /tmp/fig3.json      # sanity check (CI)
"""

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from shared.data import load_cifar10
from shared.experiments import experiment_config
from shared.figures.fig3 import measure_relative_loss
from shared.models import build_model
from shared.precision import matmul_rate
from shared.provenance import device_name, git_commit
from train_speed import random_data  # this folder's, on sys.path when run as a script

LAYOUTS = ("channels_last", "nchw")  # RelativeLossConfig.layout; ratios against the last
# the default probe is 80 sizes x 3 mini-batches; the benchmark times fewer and scales by forwards
BENCH = {"default": dict(preset="paper", sizes=16, probe_batches=(1, 4)),
         "smoke": dict(preset="smoke", sizes=8, probe_batches=(1, 2))}


def forward_flops(cfg, x: torch.Tensor) -> float:
    model = build_model(arch=cfg.arch, bn=True).train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long))
    return counter.get_total_flops()


def agreement(a: dict, b: dict) -> dict:
    """How far two runs of the probe differ: equal first steps above 1e3, and on the first
    mini-batch the largest relative difference of the curves up to step 0.1, over the points
    below the threshold (where the loss is measured, not exploded) and over all points."""
    first = str(min(int(k) for k in a["bn"]["batches"]))
    same_first, below, every = True, 0.0, 0.0
    for name in ("bn", "no_bn"):
        for batch, run in a[name]["batches"].items():
            same_first &= run["first_above_1e3"] == b[name]["batches"][batch]["first_above_1e3"]
        for s, u, v in zip(a["sizes"], a[name]["batches"][first]["relative_loss"],
                           b[name]["batches"][first]["relative_loss"]):
            if s <= 0.1:
                diff = abs(u - v) / abs(v)
                every = max(every, diff)
                below = max(below, diff) if max(u, v) < 1e3 else below
    return {"same_first_above_1e3": same_first, "max_rel_diff_below_1e3": below, "max_rel_diff_all": every}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=list(BENCH))
    parser.add_argument("--data-dir", default=None, help="default: random images (speed does not depend on them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    bench = BENCH[args.preset]
    cfg = replace(experiment_config("fig3_relative_loss", bench["preset"], train_subset=None),
                  sizes=bench["sizes"], probe_batches=bench["probe_batches"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = (load_cifar10(args.data_dir) if args.data_dir
            else random_data(cfg.batch_size * max(cfg.probe_batches), 0, "cpu"))
    data = data.to(device)
    default = experiment_config("fig3_relative_loss", bench["preset"])
    forwards = cfg.sizes * len(cfg.probe_batches) * 2
    default_forwards = default.sizes * len(default.probe_batches) * 2
    runs, rows = {}, []
    for name in LAYOUTS:
        measure_relative_loss(replace(cfg, sizes=2, probe_batches=(1,), layout=name), data, args.seed)  # warm-up
        start = time.perf_counter()
        runs[name] = measure_relative_loss(replace(cfg, layout=name), data, args.seed)
        seconds = time.perf_counter() - start
        rows.append({"layout": name, "seconds": seconds, "per_default_seed_s": seconds * default_forwards / forwards})
    for row in rows:
        row["speedup_vs_nchw"] = rows[-1]["seconds"] / row["seconds"]
    flops = forward_flops(cfg, data.train_x[:cfg.batch_size].float()) * default_forwards
    report = {"device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "python": platform.python_version(), "git_commit": git_commit(), "config": asdict(cfg),
              "data": data.source, "rows": rows, "agreement": agreement(runs["channels_last"], runs["nchw"]),
              "runs": runs,
              "floor_per_default_seed_s": flops / matmul_rate("fp32", device, 2048, seconds=1.0)}
    for row in rows:
        print(f"{row['layout']:>14}: {row['seconds']:.1f} s, a default seed ~{row['per_default_seed_s']:.0f} s, "
              f"{row['speedup_vs_nchw']:.2f}x vs nchw")
    print(f"floor (default seed's forward FLOPs at the matmul rate): {report['floor_per_default_seed_s']:.0f} s;",
          report["agreement"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
