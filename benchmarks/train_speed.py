"""Training speed: the blog's pipeline against ours, on one device, in one process.

Pipelines, each timed over the same training steps and the same evaluation:

  blog        the blog's loop rebuilt: torchvision-style dataset of HWC uint8 arrays turned into
              PIL images, RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize in a
              DataLoader (batch 128, shuffled, default workers), eager fp32 step with two host
              syncs per step (loss.item(), correct.item()), evaluation computing the forward pass
              twice (once for the accuracy, once for the loss), as in the blog's eval_model;
  blog-Nw     the same with N DataLoader worker processes;
  ours        shared.train (`train_epoch`, `evaluate`): data and augmentation on the device,
              channels-last, no per-step sync, strict fp32;
  ours-nchw   the same in the default (NCHW) memory layout: the baseline of `ratio_vs_fp32_nchw`;
  ours-bf16   channels-last with bf16 autocast per step (shared.precision);
  ours-bf16-compiled, ours-compiled   the same with the network under torch.compile;
  ours-xK     K runs trained together as one stacked network (aggregate images per second).

Per pipeline: seconds per training step (`s_per_step`, the data path included: augmentation,
normalisation, the step) and per full CIFAR-10 epoch with its evaluation (`s_per_epoch`: 50,000
training images and the 10,000 test images). The pipelines named in `full_epoch` train one whole
epoch and evaluate the whole test set; for the others the epoch is extrapolated from the timed steps
and evaluation (`epoch_measured` says which). Images are random uint8 (speed does not depend on the
pixels). The floor: each network's training FLOPs per image (forward and backward, counted by
torch's FlopCounterMode) times the images per second, as a fraction of the device's rate on a large
matrix product in the pipeline's precision, measured in the same process. Usage:

    python benchmarks/train_speed.py --out results.json                   # GPU, the full table
    python benchmarks/train_speed.py --preset cpu --out benchmarks/results/train_speed_cpu.json
    python benchmarks/train_speed.py --preset cpu-check --out /tmp/check.json  # does bf16 pay here?
    python benchmarks/train_speed.py --preset smoke --out /tmp/speed.json # sanity check (CI)
"""

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from shared.config import train_config
from shared.data import Cifar10, TrainLoader, channel_stats
from shared.models import CIFAR_DEPTHS, build_model
from shared.precision import cpu_capability, matmul_rate, tf32_setting
from shared.provenance import device_name, git_commit
from shared.train import MEMORY_FORMATS, Runs, evaluate, train_epoch
from shared.train.pace import training_flops_per_image

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000


@dataclass(frozen=True)
class Engine:
    """How `shared.train` runs a pipeline named `ours...`."""
    precision: str = "fp32"
    memory_format: str = "channels_last"   # or "nchw"
    compile: bool = False
    together: int = 1


ENGINES = {"ours": Engine(), "ours-nchw": Engine(memory_format="nchw"), "ours-bf16": Engine("bf16"),
           "ours-compiled": Engine(compile=True), "ours-bf16-compiled": Engine("bf16", compile=True),
           **{f"ours-x{k}": Engine(together=k) for k in (2, 4, 8)}}
BASELINE = "ours-nchw"  # strict fp32 in the default layout


@dataclass(frozen=True)
class BenchConfig:
    archs: tuple[tuple[str, bool], ...] = (("resnet110", True), ("resnet110", False), ("resnet101", True))
    batch_size: int = 128
    steps: int = 60                 # timed training steps per pipeline (after `warmup_steps`)
    warmup_steps: int = 10
    eval_images: int = 2000         # timed evaluation images, extrapolated to the test set's 10,000
    workers: tuple[int, ...] = (8,)  # the blog-Nw variants
    blog: bool = True               # time the blog's pipelines
    ours: tuple[str, ...] = ("ours", "ours-nchw", "ours-compiled", "ours-x4", "ours-x8")  # ENGINES
    full_epoch: tuple[str, ...] = ()  # pipelines timed over one whole epoch and test set
    matmul_size: int = 8192         # the matrix product that measures the device's rate
    train_images: int = TRAIN_IMAGES  # the epoch that s_per_epoch describes
    test_images: int = TEST_IMAGES


BENCH_PRESETS = {
    "gpu": BenchConfig(),
    # the CPU engine on ResNet-110 at the paper's batch: strict fp32 (NCHW, the baseline, and
    # channels-last) against bf16 channels-last, eager and compiled; the eager bf16 pipelines
    # also over one whole epoch with evaluation
    "cpu": BenchConfig(archs=(("resnet110", True), ("resnet110", False)), steps=20, warmup_steps=3,
                       eval_images=1000, blog=False,
                       ours=("ours-nchw", "ours", "ours-bf16", "ours-bf16-compiled"),
                       full_epoch=("ours-bf16",), matmul_size=2048),
    # does bf16 pay on this CPU? The eager pipelines of "cpu" over a few steps (about two minutes)
    "cpu-check": BenchConfig(archs=(("resnet110", True), ("resnet110", False)), steps=8, warmup_steps=2,
                             eval_images=256, blog=False, ours=("ours-nchw", "ours", "ours-bf16"),
                             full_epoch=(), matmul_size=2048),
    # the blog against ours on a CPU (strict fp32), the small network and ResNet-110
    "cpu-blog": BenchConfig(archs=(("resnet20", True), ("resnet20", False), ("resnet110", True)), steps=10,
                            warmup_steps=2, eval_images=1000, workers=(2,), ours=("ours", "ours-nchw", "ours-x2"),
                            matmul_size=2048),
    # CI's sanity check on CPU: small network, few steps; its numbers are not claims
    "smoke": BenchConfig(archs=(("resnet20", True),), batch_size=32, steps=3, warmup_steps=1,
                         eval_images=64, workers=(2,), ours=("ours", "ours-nchw", "ours-bf16", "ours-x2"),
                         full_epoch=("ours-bf16",), matmul_size=1024, train_images=256, test_images=64),
}


def random_data(n_train: int, n_test: int, device) -> Cifar10:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    mean, std = channel_stats(x[:n_train])
    return Cifar10(x[:n_train], y[:n_train], x[n_train:], y[n_train:], mean, std, "random").to(device)


class PilDataset(Dataset):
    """torchvision.datasets.CIFAR10's storage and __getitem__: HWC uint8 -> PIL -> transform."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        self.images = x_uint8.permute(0, 2, 3, 1).cpu().numpy()  # [N, 32, 32, 3]
        self.labels = y.cpu().tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def blog_loaders(data: Cifar10, bench: BenchConfig, workers: int):
    normalize = transforms.Normalize(data.mean.tolist(), data.std.tolist())
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    train = DataLoader(PilDataset(data.train_x, data.train_y, train_tf), batch_size=bench.batch_size,
                       shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    test = DataLoader(PilDataset(data.test_x[:bench.eval_images], data.test_y[:bench.eval_images], test_tf),
                      batch_size=bench.batch_size, num_workers=workers, persistent_workers=workers > 0)
    return train, test


def time_blog(arch, bn, data, bench: BenchConfig, workers: int, device) -> dict:
    """The blog's train_epoch and eval_model (see the module docstring), timed."""
    torch.manual_seed(0)
    model = build_model(arch, bn).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    train, test = blog_loaders(data, bench, workers)
    batches = iter(train)

    def steps(n):
        model.train()
        loss_sum, correct = 0.0, 0
        for _ in range(n):
            images, labels = next(batches)
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            output = model(images)
            loss = F.cross_entropy(output, labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            correct += (output.argmax(1) == labels).float().sum().item()

    def evaluation():
        model.eval()
        with torch.no_grad():
            for images, labels in test:
                images, labels = images.to(device), labels.to(device)
                (model(images).argmax(1) == labels).float().sum().item()
                F.cross_entropy(model(images), labels).item()

    with tf32_setting("fp32"):
        return timed(steps, evaluation, bench, device)


def time_ours(arch, bn, data, bench: BenchConfig, name: str, device) -> dict:
    """shared.train's epoch and evaluation with engine ENGINES[name], timed; over one whole epoch
    and test set too if `name` is in `bench.full_epoch`."""
    engine = ENGINES[name]
    cfg = train_config("paper", arch=arch, bn=bn, lr=1e-4, batch_size=bench.batch_size,
                       precision=engine.precision, eval_batch_size=min(1000, bench.eval_images))
    layout = MEMORY_FORMATS[engine.memory_format]
    runs = Runs([cfg] * engine.together, list(range(engine.together)), device, layout)
    if engine.compile:
        runs.forward = torch.compile(runs.model)
    loaders = [TrainLoader(data.train_x, data.train_y, data.mean, data.std, bench.batch_size, seed)
               for seed in range(engine.together)]
    head = Cifar10(data.train_x, data.train_y, data.test_x[:bench.eval_images],
                   data.test_y[:bench.eval_images], data.mean, data.std, data.source)
    epoch = iter(range(10**6))

    def steps(n):
        step_losses, _ = train_epoch(runs, loaders, next(epoch), n)
        step_losses.sum().item()  # the one sync per epoch

    with tf32_setting(engine.precision):
        result = timed(steps, lambda: evaluate(runs, head, cfg.eval_batch_size), bench, device)
        if name in bench.full_epoch:
            start = time.perf_counter()
            steps(len(loaders[0]))
            evaluate(runs, data, cfg.eval_batch_size)
            sync(device)
            result["s_per_epoch"] = time.perf_counter() - start
            result["epoch_measured"] = True
    return {**result, "runs": engine.together, "precision": engine.precision}


def timed(steps, evaluation, bench: BenchConfig, device) -> dict:
    """Seconds per training step and per epoch (extrapolated from the timed steps and evaluation)."""
    steps(bench.warmup_steps)
    evaluation()
    sync(device)
    start = time.perf_counter()
    steps(bench.steps)
    sync(device)
    s_per_step = (time.perf_counter() - start) / bench.steps
    start = time.perf_counter()
    evaluation()
    sync(device)
    eval_s = (time.perf_counter() - start) / bench.eval_images * bench.test_images
    s_per_epoch = -(-bench.train_images // bench.batch_size) * s_per_step + eval_s
    return {"s_per_step": s_per_step, "s_per_epoch": s_per_epoch, "s_per_epoch_extrapolated": s_per_epoch,
            "epoch_measured": False, "runs": 1, "precision": "fp32"}


def profile_step(arch: str, bn: bool, name: str, bench: BenchConfig, device, steps: int = 3,
                 top: int = 12) -> list[dict]:
    """Where a training step of pipeline `name` spends its time: torch.profiler's operators by
    self time over `steps` steps (after a warm-up), the `top` largest with their share."""
    engine = ENGINES[name]
    cfg = train_config("paper", arch=arch, bn=bn, lr=1e-4, batch_size=bench.batch_size, precision=engine.precision)
    layout = MEMORY_FORMATS[engine.memory_format]
    runs = Runs([cfg], [0], device, layout)
    data = random_data(bench.batch_size * (steps + 1), 8, device)
    loader = TrainLoader(data.train_x, data.train_y, data.mean, data.std, bench.batch_size, 0)
    with tf32_setting(engine.precision):
        train_epoch(runs, [loader], 0, 1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train_epoch(runs, [loader], 1, steps)[0].sum().item()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_s_per_step": e.self_cpu_time_total / 1e6 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:top]]


@dataclass
class Row:
    network: str
    pipeline: str
    precision: str
    runs: int
    s_per_step: float           # one training step of all `runs` together, data path included
    s_per_epoch: float          # one epoch of all `runs` with its evaluation
    epoch_measured: bool        # s_per_epoch timed over a whole epoch (else extrapolated)
    s_per_epoch_extrapolated: float
    train_images_per_s: float   # aggregate over the runs
    ratio_vs_fp32_nchw: float = field(default=float("nan"))  # per-run step time, baseline / this
    epoch_ratio_vs_fp32_nchw: float = field(default=float("nan"))  # the same per epoch
    speedup_vs_blog: float = field(default=float("nan"))  # per-run epoch time, blog / this
    fraction_of_matmul_rate: float = field(default=float("nan"))  # training FLOP/s / measured rate


def ratio(rows: list[Row], row: Row, base: str, key: str) -> float:
    """`base`'s per-run `key` (time) over `row`'s, NaN where `base` was not timed."""
    base_row = next((r for r in rows if r.network == row.network and r.pipeline == base), None)
    return float("nan") if base_row is None else getattr(base_row, key) / (getattr(row, key) / row.runs)


def benchmark(bench: BenchConfig, device: torch.device) -> tuple[list[Row], dict]:
    # random images: enough for the warm-up and timed steps within one epoch, or a whole epoch
    n_train = bench.train_images if bench.full_epoch else bench.batch_size * (bench.steps + bench.warmup_steps)
    data = random_data(n_train, bench.test_images if bench.full_epoch else bench.eval_images, device)
    rates = {p: matmul_rate(p, device, bench.matmul_size, seconds=1.0) for p in ("fp32", "bf16")}
    print("  measured matrix-product rate: " + ", ".join(f"{r / 1e12:.3f} TFLOP/s ({p})" for p, r in rates.items()),
          flush=True)
    rows = []
    for arch, bn in bench.archs:
        network = f"{arch} {'BN' if bn else 'no BN'}"
        flops = training_flops_per_image(arch, bn)
        pipelines = []
        if bench.blog:
            pipelines += [("blog", lambda: time_blog(arch, bn, data, bench, 0, device))]
            pipelines += [(f"blog-{w}w", lambda w=w: time_blog(arch, bn, data, bench, w, device))
                          for w in bench.workers]
        pipelines += [(name, lambda name=name: time_ours(arch, bn, data, bench, name, device))
                      for name in bench.ours if ENGINES[name].together == 1 or arch in CIFAR_DEPTHS]
        for name, run in pipelines:
            r = run()
            ips = bench.batch_size * r["runs"] / r["s_per_step"]
            rows.append(Row(network, name, r["precision"], r["runs"], r["s_per_step"], r["s_per_epoch"],
                            r["epoch_measured"], r["s_per_epoch_extrapolated"], ips,
                            fraction_of_matmul_rate=ips * flops / rates[r["precision"]]))
            print(f"  {network:16s} {name:20s} {r['s_per_step']:7.3f} s/step {r['s_per_epoch']:8.1f} s/epoch"
                  f"{' (measured)' if r['epoch_measured'] else ''}", flush=True)
        for r in rows:
            if r.network == network:
                r.ratio_vs_fp32_nchw = ratio(rows, r, BASELINE, "s_per_step")
                r.epoch_ratio_vs_fp32_nchw = ratio(rows, r, BASELINE, "s_per_epoch")
                r.speedup_vs_blog = ratio(rows, r, "blog", "s_per_epoch")
    return rows, rates


def table(rows: list[Row]) -> str:
    lines = [f"{'network':16s} {'pipeline':20s} {'runs':>4s} {'s/step':>7s} {'s/epoch':>8s} {'x nchw':>7s} "
             f"{'x blog':>7s} {'of rate':>8s}"]
    lines += [f"{r.network:16s} {r.pipeline:20s} {r.runs:4d} {r.s_per_step:7.3f} {r.s_per_epoch:8.1f}"
              f"{'*' if r.epoch_measured else ' '}{r.ratio_vs_fp32_nchw:6.2f} {r.speedup_vs_blog:7.2f} "
              f"{r.fraction_of_matmul_rate:8.1%}" for r in rows]
    return "\n".join(lines + ["(* a whole epoch and test set timed; the other epochs extrapolated)"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpu", choices=list(BENCH_PRESETS),
                        help="gpu: the full table; cpu: the CPU engine on ResNet-110 (fp32 against bf16); cpu-check: whether bf16 pays on this CPU, in two minutes; cpu-blog: the blog against ours on a CPU; smoke: CI's sanity check")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per pipeline")
    parser.add_argument("--profile", nargs="*", default=None, metavar="PIPELINE",
                        help="also profile a step of these pipelines (default ours-bf16) on each network")
    parser.add_argument("--profile-only", action="store_true",
                        help="only profile, adding the profile to the existing report at --out")
    args = parser.parse_args(argv)
    bench = BENCH_PRESETS[args.preset]
    if args.steps is not None:
        bench = replace(bench, steps=args.steps)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"device: {device_name(device)}", flush=True)
    if args.profile_only:
        report = json.loads(args.out.read_text())  # the timed report the profile explains
    else:
        rows, rates = benchmark(bench, device)
        print(table(rows))
        report = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
                  "git_commit": git_commit(), "bench": asdict(bench), "cpu": cpu_capability(),
                  "matmul_tflop_per_s": {p: r / 1e12 for p, r in rates.items()},
                  "training_gflop_per_image": {f"{a} {'BN' if bn else 'no BN'}": training_flops_per_image(a, bn) / 1e9
                                               for a, bn in bench.archs},
                  "rows": [asdict(r) for r in rows]}
    if args.profile is not None or args.profile_only:
        names = args.profile or ["ours-bf16"]
        report["profile"] = {"git_commit": git_commit(), "device": device_name(device), "networks": {
            f"{a} {'BN' if bn else 'no BN'}": {name: profile_step(a, bn, name, bench, device) for name in names}
            for a, bn in bench.archs}}
        for network, by_name in report["profile"]["networks"].items():
            for name, ops in by_name.items():
                print(f"profile of a {network} step, {name}:")
                print("\n".join(f"  {o['op']:40s} {o['self_s_per_step']:7.3f} s {o['share']:6.1%}" for o in ops))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
