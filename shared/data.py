"""CIFAR-10: reading it from disk, caching it decoded, and feeding it from the device.

`load_cifar10` reads, from the data dir (the `data_dir` argument, else $CIFAR10_DIR, else `data/`),
the first of these layouts it finds:

1. the path itself is a `.tar.gz` / `.tgz` / `.tar` of image folders `train/<class>/*` and
   `test/<class>/*` (optionally under one top-level folder), read straight out of the archive;
2. `cifar-10-batches-py/`, the official python release (pickled batches);
3. image folders `train/<class>/*` and `test/<class>/*` in the dir, or in one of its subfolders,
   or a single `.tar.gz` of them in the dir;
4. nothing: with `download=True`, torchvision downloads the official release into the dir.

Finding, reading and decoding a copy is shared.cifar_files's job; the decoded tensors are cached
under `data/cache/`, keyed by the source's identity, so images are decoded once. Training then runs from tensors on the device: `TrainLoader` applies the paper's
augmentation (4-pixel zero padding, random 32x32 crop, random horizontal flip) on the device, with
all randomness of an epoch drawn from a generator seeded by (seed, epoch).
"""

import dataclasses
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .cifar_files import (BATCHES_DIR, CACHE_DIR, CLASSES, DATA_DIR_ENV, DEFAULT_DATA_DIR,
                          DatasetError, content_digest, decode_source, find_source, fingerprint, load_cache,
                          resolve_data_dir)
from .fileio import save_torch_atomic, write_atomic

__all__ = ["BATCHES_DIR", "CLASSES", "DATA_DIR_ENV", "DEFAULT_DATA_DIR", "Cifar10", "DatasetError",
           "TrainLoader", "augment", "channel_stats", "data_source", "epoch_randomness", "eval_batches",
           "load_cifar10", "normalize", "resolve_data_dir", "source_digest"]

PAD = 4  # pixels of zero padding on each side before the random crop


# ---------------------------------------------------------------------------------------------
# The dataset held in memory


@dataclass(frozen=True, eq=False)
class Cifar10:
    """CIFAR-10 as uint8 image tensors, with the training set's per-channel statistics."""

    train_x: torch.Tensor  # uint8 [50000, 3, 32, 32]
    train_y: torch.Tensor  # int64 [50000]
    test_x: torch.Tensor   # uint8 [10000, 3, 32, 32]
    test_y: torch.Tensor   # int64 [10000]
    mean: torch.Tensor     # float32 [3], per-channel mean of train_x in [0, 1] units
    std: torch.Tensor      # float32 [3], per-channel std of train_x in [0, 1] units
    source: str            # what was read: the layout, its file name and a hash of its contents

    def to(self, device: torch.device | str) -> "Cifar10":
        """The same dataset with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name).to(device)
                 for f in dataclasses.fields(self) if f.name != "source"}
        return dataclasses.replace(self, **moved)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Cifar10":
        """Class-balanced subsets: the first n // 10 images of each class, in dataset order.

        `None` keeps a split whole. The statistics are recomputed on the training subset.
        """
        data = self
        if n_train is not None:
            idx = _balanced_indices(self.train_y, n_train, "n_train")
            mean, std = channel_stats(self.train_x[idx])
            data = dataclasses.replace(data, train_x=self.train_x[idx], train_y=self.train_y[idx],
                                       mean=mean, std=std)
        if n_test is not None:
            idx = _balanced_indices(self.test_y, n_test, "n_test")
            data = dataclasses.replace(data, test_x=self.test_x[idx], test_y=self.test_y[idx])
        return data


def _balanced_indices(y: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Sorted indices of the first n // 10 examples of each class."""
    if not len(CLASSES) <= n <= len(y):
        raise ValueError(f"{name} must be in {len(CLASSES)}..{len(y)}, got {n}")
    k = n // len(CLASSES)
    per_class = [(y == c).nonzero().flatten()[:k] for c in range(len(CLASSES))]
    for name_c, idx in zip(CLASSES, per_class):
        if len(idx) < k:
            raise ValueError(f"{name}={n} needs {k} images per class; {name_c} has {len(idx)}")
    return torch.cat(per_class).sort().values


def channel_stats(x_uint8: torch.Tensor,
                  chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std over N, H, W of uint8 images, in [0, 1] units.

    Sums are accumulated exactly in int64, chunk by chunk, and finished in float64.
    """
    total = torch.zeros(3, dtype=torch.int64, device=x_uint8.device)
    total_sq = torch.zeros(3, dtype=torch.int64, device=x_uint8.device)
    for chunk in x_uint8.split(chunk_size):
        chunk = chunk.long()  # [n, 3, 32, 32]
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = x_uint8.numel() // 3
    mean = total.double() / (255 * count)
    var = total_sq.double() / (255**2 * count) - mean.square()
    return mean.float(), var.clamp(min=0).sqrt().float()


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """float32 (x / 255 - mean) / std, per channel, for uint8 images [B, 3, H, W]."""
    return (x_uint8.float() / 255 - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Augmentation and loaders (everything on the device, no host synchronisation)


def augment(x_uint8: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The paper's augmentation with given randomness, as torchvision's RandomCrop(32, padding=4)
    followed by RandomHorizontalFlip.

    x_uint8: uint8 [B, 3, 32, 32]; offsets: int [B, 2], the (row, col) of each crop's top-left
    corner in the zero-padded 40x40 image, in 0..8; flips: bool [B]. Returns uint8 [B, 3, 32, 32].
    """
    B, C, H, W = x_uint8.shape
    padded = F.pad(x_uint8, (PAD, PAD, PAD, PAD))  # [B, 3, 40, 40], zeros in pixel space
    rows = offsets[:, 0:1] + torch.arange(H, device=x_uint8.device)  # [B, 32]
    cols = offsets[:, 1:2] + torch.arange(W, device=x_uint8.device)  # [B, 32]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    b = torch.arange(B, device=x_uint8.device)
    c = torch.arange(C, device=x_uint8.device)
    return padded[b[:, None, None, None], c[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]  # [B, 3, 32, 32]


def epoch_randomness(n: int, seed: int, epoch: int, device: torch.device | str, augment: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """All randomness of one epoch, a pure function of (n, seed, epoch, device type).

    Returns the permutation [n] and, when `augment`, for the images in permuted order: the crop
    offsets int64 [n, 2], uniform over the 9x9 positions, and the flips bool [n], each with p=0.5.
    """
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g, device=device)
    if not augment:
        return perm, None, None
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g, device=device)
    flips = torch.rand(n, generator=g, device=device) < 0.5
    return perm, offsets, flips


@dataclass
class TrainLoader:
    """Shuffled, augmented, normalised mini-batches of a dataset held on its device: images `x`
    (uint8 [N, 3, 32, 32]), labels `y`, and the channel `mean` and `std` that normalise them.

    An epoch is a pure function of (data, seed, epoch), so a resumed run sees the same batches.
    The last, partial batch of an epoch is kept.
    """
    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    batch_size: int = 128
    seed: int = 0
    augment: bool = True

    def __post_init__(self):
        self.y, self.mean, self.std = (t.to(self.x.device) for t in (self.y, self.mean, self.std))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of epoch `epoch`: normalised float32 [B, 3, 32, 32] and int64 labels [B]."""
        n = len(self.x)
        perm, offsets, flips = epoch_randomness(n, self.seed, epoch, self.x.device, self.augment)
        for start in range(0, n, self.batch_size):
            batch = slice(start, start + self.batch_size)
            idx = perm[batch]
            x = self.x[idx]  # uint8 [B, 3, 32, 32]
            if self.augment:
                x = augment(x, offsets[batch], flips[batch])
            yield normalize(x, self.mean, self.std), self.y[idx]


def eval_batches(x_uint8: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 batch_size: int = 1000) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised batches in dataset order, without augmentation."""
    mean, std = mean.to(x_uint8.device), std.to(x_uint8.device)
    for start in range(0, len(x_uint8), batch_size):
        yield normalize(x_uint8[start:start + batch_size], mean, std), y[start:start + batch_size]


# ---------------------------------------------------------------------------------------------
# Loading: the decoded tensors, from the cache or decoded once (shared.cifar_files)


def cache_file(kind: str, path: Path, cache_dir: Path | None) -> Path:
    """The decoded tensors' file of a source (its `.source` beside it names what it holds)."""
    return Path(cache_dir or CACHE_DIR) / f"cifar10-{fingerprint(kind, path)}.pt"


def load_cifar10(data_dir: str | Path | None = None, download: bool = True,
                 cache_dir: Path | None = None) -> Cifar10:
    """CIFAR-10 from the first layout found in the data dir (see the module docstring).

    Decoded once, then read from a tensor file in `cache_dir` (default `data/cache/`).
    Raises DatasetError when no usable copy is found.
    """
    kind, path = find_source(resolve_data_dir(data_dir), download)
    cache = cache_file(kind, path, cache_dir)
    tensors = load_cache(cache)
    if tensors is None:
        tensors = decode_source(kind, path)
        tensors["mean"], tensors["std"] = channel_stats(tensors["train_x"])
        tensors["source"] = f"{kind} {path.name}, {content_digest(tensors)}"
        save_torch_atomic(cache, tensors)
    if not cache.with_suffix(".source").exists():
        write_atomic(cache.with_suffix(".source"), tensors["source"].encode())
    return Cifar10(**tensors)


def data_source(data_dir: str | Path | None = None, cache_dir: Path | None = None) -> str | None:
    """The `source` of the CIFAR-10 copy in the data dir, as `load_cifar10` gives it (its layout,
    file name and a hash of its pixels and labels), read from beside the decoded cache (decoding
    it once if it is not cached); None where the data dir holds no copy (nothing is downloaded).
    What a stored run's provenance is compared with (`shared.compute.get_or_measure`); remembered
    per process while the data dir's own modification time stays the same."""
    path = resolve_data_dir(data_dir)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _data_source(path, mtime, cache_dir)


@functools.lru_cache(maxsize=16)
def _data_source(data_dir: Path, mtime_ns: int, cache_dir: Path | None) -> str | None:
    try:
        kind, path = find_source(data_dir, download=False)
    except DatasetError:
        return None
    cache = cache_file(kind, path, cache_dir).with_suffix(".source")
    try:
        return cache.read_text()
    except OSError:
        return load_cifar10(data_dir, download=False, cache_dir=cache_dir).source


def source_digest(source: str | None) -> str | None:
    """The pixels-and-labels hash in a data `source` string, or None if it has none."""
    match = re.search(r"pixels\+labels sha256 ([0-9a-f]+)", source or "")
    return match.group(1) if match else None
