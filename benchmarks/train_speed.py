"""Training speed: the blog's pipeline against ours, on one device, in one process.

Pipelines, each timed over the same number of training steps and evaluation images, and
extrapolated to one CIFAR-10 epoch (50,000 training + 10,000 test images):

  blog        the blog's loop rebuilt: torchvision-style dataset of HWC uint8 arrays turned into
              PIL images, RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize in a
              DataLoader (batch 128, shuffled, default workers), eager fp32 step with two host
              syncs per step (loss.item(), correct.item()), evaluation computing the forward pass
              twice (once for the accuracy, once for the loss), as in the blog's eval_model;
  blog-Nw     the same with N DataLoader worker processes;
  ours        shared.train: data and augmentation on the device, channels-last, no per-step sync;
  ours-nchw   the same in the default (NCHW) memory layout;
  ours-compiled   the same with the model under torch.compile;
  ours-xK     K runs trained together as one stacked network (aggregate images per second).

Images are random uint8 (speed does not depend on the pixels). Ratios are against `blog` in the
same process. The floor: each network's training FLOPs per image (forward and backward, counted by
torch's FlopCounterMode) times the images per second, as a fraction of the device's fp32 rate
measured on a large matrix product in the same process. Usage:

    python benchmarks/train_speed.py --out results.json                   # GPU, the full table
    python benchmarks/train_speed.py --preset cpu --out cpu.json          # a CPU's view, batch 128
    python benchmarks/train_speed.py --preset smoke --out /tmp/speed.json # sanity check (CI)
"""

import argparse
import functools
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from shared.config import train_config
from shared.data import Cifar10, TrainLoader, channel_stats
from shared.models import CIFAR_DEPTHS, build_model
from shared.results import device_name, git_commit
from shared.train import Runs, evaluate, precision_context, train_epoch

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000


@dataclass(frozen=True)
class BenchConfig:
    archs: tuple[tuple[str, bool], ...] = (("resnet110", True), ("resnet110", False), ("resnet101", True))
    batch_size: int = 128
    steps: int = 60                 # timed training steps per pipeline (after `warmup_steps`)
    warmup_steps: int = 10
    eval_images: int = 2000
    workers: tuple[int, ...] = (8,)  # the blog-Nw variants
    together: tuple[int, ...] = (4, 8)
    compile: bool = True
    precision: str = "fp32"
    matmul_size: int = 8192         # the matrix product that measures the device's rate


BENCH_PRESETS = {
    "gpu": BenchConfig(),
    # what a CPU can say: the paper's batch, a few steps, the small network and ResNet-110
    "cpu": BenchConfig(archs=(("resnet20", True), ("resnet20", False), ("resnet110", True)), steps=10,
                       warmup_steps=2, eval_images=1000, workers=(2,), together=(2,), compile=False,
                       matmul_size=2048),
    # CI's sanity check on CPU: small network, few steps; its numbers are not claims
    "smoke": BenchConfig(archs=(("resnet20", True),), batch_size=32, steps=3, warmup_steps=1,
                         eval_images=64, workers=(2,), together=(2,), compile=False,
                         matmul_size=1024),
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

    return timed(steps, evaluation, bench, device)


def time_ours(arch, bn, data, bench: BenchConfig, together: int, compile: bool, device,
              memory_format=torch.channels_last) -> dict:
    """shared.train's epoch and evaluation for `together` runs, timed."""
    cfgs = [train_config("paper", arch=arch, bn=bn, lr=1e-4, batch_size=bench.batch_size,
                         precision=bench.precision)] * together
    runs = Runs(cfgs, list(range(together)), device, memory_format)
    if compile:
        runs.forward = torch.compile(runs.model)
    loaders = [TrainLoader(data.train_x, data.train_y, data.mean, data.std, bench.batch_size, seed)
               for seed in range(together)]
    test = Cifar10(data.train_x, data.train_y, data.test_x[:bench.eval_images],
                   data.test_y[:bench.eval_images], data.mean, data.std, data.source)
    epoch = iter(range(10**6))

    def steps(n):
        step_losses, _ = train_epoch(runs, loaders, next(epoch), n)
        step_losses.sum().item()  # the one sync per epoch

    result = timed(steps, lambda: evaluate(runs, test, bench.batch_size), bench, device,
                   precision=bench.precision)
    result["runs"] = together
    return result


def timed(steps, evaluation, bench: BenchConfig, device, precision: str = "fp32") -> dict:
    with precision_context(precision, device):
        steps(bench.warmup_steps)
        evaluation()
        sync(device)
        start = time.perf_counter()
        steps(bench.steps)
        sync(device)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        evaluation()
        sync(device)
        eval_s = time.perf_counter() - start
    train_ips = bench.steps * bench.batch_size / train_s
    eval_ips = bench.eval_images / eval_s
    return {"train_images_per_s": train_ips, "eval_images_per_s": eval_ips,
            "epoch_s": TRAIN_IMAGES / train_ips + TEST_IMAGES / eval_ips, "runs": 1}


@functools.cache
def training_flops_per_image(arch: str, bn: bool) -> float:
    """FLOPs of one training step per image: forward, loss and backward (2 per multiply-add)."""
    model = build_model(arch, bn)
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / len(x)


def matmul_flops_per_s(device, size: int, precision: str) -> float:
    """The device's rate on a [size, size] @ [size, size] float32 product, in the run's precision."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    with precision_context(precision, device):
        a @ b
        sync(device)
        reps, start = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - start < 1.0:
            a @ b
            reps += 1
        sync(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - start)


@dataclass
class Row:
    network: str
    pipeline: str
    runs: int
    epoch_s: float              # per epoch of all `runs` together
    train_images_per_s: float   # aggregate over the runs
    speedup_vs_blog: float = field(default=float("nan"))  # per-run epoch time, blog / this
    fraction_of_matmul_rate: float = field(default=float("nan"))  # training FLOP/s / measured rate


def benchmark(bench: BenchConfig, device: torch.device) -> list[Row]:
    # random images, enough for the warm-up and timed steps within one epoch
    data = random_data(bench.batch_size * (bench.steps + bench.warmup_steps), bench.eval_images, device)
    rate = matmul_flops_per_s(device, bench.matmul_size, bench.precision)
    print(f"  measured matrix-product rate: {rate / 1e12:.3f} TFLOP/s ({bench.precision})", flush=True)
    rows = []
    for arch, bn in bench.archs:
        network = f"{arch} {'BN' if bn else 'no BN'}"
        flops = training_flops_per_image(arch, bn)
        pipelines = [("blog", lambda: time_blog(arch, bn, data, bench, 0, device))]
        pipelines += [(f"blog-{w}w", lambda w=w: time_blog(arch, bn, data, bench, w, device))
                      for w in bench.workers]
        pipelines += [("ours", lambda: time_ours(arch, bn, data, bench, 1, False, device)),
                      ("ours-nchw", lambda: time_ours(arch, bn, data, bench, 1, False, device,
                                                      torch.contiguous_format))]
        if bench.compile:
            pipelines += [("ours-compiled", lambda: time_ours(arch, bn, data, bench, 1, True, device))]
        if arch in CIFAR_DEPTHS:  # stacking is for the CIFAR ResNets
            pipelines += [(f"ours-x{k}", lambda k=k: time_ours(arch, bn, data, bench, k, False, device))
                          for k in bench.together]
        for name, run in pipelines:
            r = run()
            ips = r["train_images_per_s"] * r["runs"]
            rows.append(Row(network, name, r["runs"], r["epoch_s"], ips, fraction_of_matmul_rate=ips * flops / rate))
            print(f"  {network:16s} {name:14s} {r['epoch_s']:9.1f} s/epoch", flush=True)
        blog = next(r for r in rows if r.network == network and r.pipeline == "blog")
        for r in rows:
            if r.network == network:
                r.speedup_vs_blog = blog.epoch_s / (r.epoch_s / r.runs)
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'network':16s} {'pipeline':14s} {'runs':>4s} {'s/epoch':>9s} {'img/s':>9s} {'x blog':>7s} "
             f"{'of rate':>8s}"]
    lines += [f"{r.network:16s} {r.pipeline:14s} {r.runs:4d} {r.epoch_s:9.1f} "
              f"{r.train_images_per_s:9.0f} {r.speedup_vs_blog:7.2f} {r.fraction_of_matmul_rate:8.1%}" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpu", choices=list(BENCH_PRESETS),
                        help="gpu: the full table; cpu: batch 128, small; smoke: CI's sanity check")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per pipeline")
    args = parser.parse_args(argv)
    bench = BENCH_PRESETS[args.preset]
    if args.steps is not None:
        bench = replace(bench, steps=args.steps)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"device: {device_name(device)}", flush=True)
    rows = benchmark(bench, device)
    print(table(rows))
    report = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
              "git_commit": git_commit(), "bench": asdict(bench),
              "training_gflop_per_image": {f"{a} {'BN' if bn else 'no BN'}": training_flops_per_image(a, bn) / 1e9
                                           for a, bn in bench.archs},
              "rows": [asdict(r) for r in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
