"""CIFAR-10: reading it from disk, caching it decoded, and feeding it from the device.

`load_cifar10` reads, from the data dir (the `data_dir` argument, else $CIFAR10_DIR, else `data/`),
the first of these layouts it finds:

1. the path itself is a `.tar.gz` / `.tgz` / `.tar` of image folders `train/<class>/*` and
   `test/<class>/*` (optionally under one top-level folder), read straight out of the archive;
2. `cifar-10-batches-py/`, the official python release (pickled batches);
3. image folders `train/<class>/*` and `test/<class>/*` in the dir, or in one of its subfolders,
   or a single `.tar.gz` of them in the dir;
4. nothing: with `download=True`, torchvision downloads the official release into the dir.

The decoded tensors are cached under `data/cache/`, keyed by the source's identity, so images are
decoded once. Training then runs from tensors on the device: `TrainLoader` applies the paper's
augmentation (4-pixel zero padding, random 32x32 crop, random horizontal flip) on the device, with
all randomness of an epoch drawn from a generator seeded by (seed, epoch).
"""

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from .fileio import save_torch_atomic, write_atomic
from .paths import DATA_DIR

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
DEFAULT_DATA_DIR = DATA_DIR
DATA_DIR_ENV = "CIFAR10_DIR"

BATCHES_DIR = "cifar-10-batches-py"  # also the name of that source kind
ARCHIVE, TREE = "image-folder archive", "image-folder tree"  # the other source kinds
SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
IMAGE_SUFFIXES = frozenset(Image.registered_extensions())  # every extension Pillow can read
IMAGE_SHAPE = (3, 32, 32)
CACHE_FORMAT = "2"  # bump when what the cache holds changes, so old cache files are not read
PAD = 4  # pixels of zero padding on each side before the random crop
HOW_TO_GET = (
    "How to get CIFAR-10: on a machine with internet, load_cifar10(download=True) lets torchvision "
    f"download the official release into the data dir (default {DEFAULT_DATA_DIR}); or set "
    f"${DATA_DIR_ENV} (or pass data_dir) to a folder holding {BATCHES_DIR}/, or image folders "
    "train/<class>/* and test/<class>/*, or a .tar.gz of such folders, or to that .tar.gz itself."
)


class DatasetError(RuntimeError):
    """CIFAR-10 is missing or malformed; the message says what was looked for and how to fix it."""


def _error(what: str) -> DatasetError:
    return DatasetError(f"{what}\n{HOW_TO_GET}")


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


class TrainLoader:
    """Shuffled, augmented, normalised mini-batches of a dataset held on its device.

    An epoch is a pure function of (data, seed, epoch), so a resumed run sees the same batches.
    The last, partial batch of an epoch is kept.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 batch_size: int = 128, seed: int = 0, augment: bool = True):
        self.x, self.y = x_uint8, y.to(x_uint8.device)
        self.mean, self.std = mean.to(x_uint8.device), std.to(x_uint8.device)
        self.batch_size, self.seed, self.augment = batch_size, seed, augment

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
# Finding and reading the data


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir` if given, else $CIFAR10_DIR if set, else `data/` in the repository."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def load_cifar10(data_dir: str | Path | None = None, download: bool = True,
                 cache_dir: Path | None = None) -> Cifar10:
    """CIFAR-10 from the first layout found in the data dir (see the module docstring).

    Decoded once, then read from a tensor file in `cache_dir` (default `data/cache/`).
    Raises DatasetError when no usable copy is found.
    """
    kind, path = _find_source(resolve_data_dir(data_dir), download)
    cache = Path(cache_dir or DEFAULT_DATA_DIR / "cache") / f"cifar10-{_fingerprint(kind, path)}.pt"
    tensors = _load_cache(cache)
    if tensors is None:
        tensors = _decode_source(kind, path)
        tensors["mean"], tensors["std"] = channel_stats(tensors["train_x"])
        tensors["source"] = f"{kind} {path.name}, {_content_digest(tensors)}"
        save_torch_atomic(cache, tensors)
    if not cache.with_suffix(".source").exists():
        write_atomic(cache.with_suffix(".source"), tensors["source"].encode())
    return Cifar10(**tensors)


def data_source(data_dir: str | Path | None = None, cache_dir: Path | None = None) -> str | None:
    """The `source` of the CIFAR-10 copy in the data dir, as `load_cifar10` gives it (its layout,
    file name and a hash of its pixels and labels), read from beside the decoded cache (decoding
    it once if it is not cached); None where the data dir holds no copy (nothing is downloaded).
    What a stored run's provenance is compared with (`shared.results.get_or_measure`); remembered
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
        kind, path = _find_source(data_dir, download=False)
    except DatasetError:
        return None
    cache = Path(cache_dir or DEFAULT_DATA_DIR / "cache") / f"cifar10-{_fingerprint(kind, path)}.source"
    try:
        return cache.read_text()
    except OSError:
        return load_cifar10(data_dir, download=False, cache_dir=cache_dir).source


def source_digest(source: str | None) -> str | None:
    """The pixels-and-labels hash in a data `source` string, or None if it has none."""
    match = re.search(r"pixels\+labels sha256 ([0-9a-f]+)", source or "")
    return match.group(1) if match else None


def _content_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A short hash of the decoded images and labels: which data a result was computed on."""
    h = hashlib.sha256()
    for key in ("train_x", "train_y", "test_x", "test_y"):
        h.update(tensors[key].contiguous().numpy().tobytes())
    return f"pixels+labels sha256 {h.hexdigest()[:12]}"


def _is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def _layouts_tried(path: Path) -> str:
    return (f"looked for: {path} as a .tar.gz/.tgz/.tar of image folders; {path / BATCHES_DIR}/ "
            f"(official python release); {path}/train/ and {path}/test/ image folders, also one "
            f"subfolder down ({path}/*/train/); a single {path}/*.tar.gz of image folders")


def _find_source(path: Path, download: bool) -> tuple[str, Path]:
    """The layout found at `path` (downloading if allowed and none is): (kind, path to read)."""
    if path.is_file():
        if _is_archive(path):
            return ARCHIVE, path
        raise _error(f"{path} is a file but not a .tar.gz/.tgz/.tar archive of image folders")
    if not path.exists() and (_is_archive(path) or not download):
        raise _error(f"CIFAR-10 not found: {path} does not exist.")
    if (path / BATCHES_DIR).is_dir():
        return BATCHES_DIR, path / BATCHES_DIR
    if path.is_dir():
        candidates = [path, *sorted(path.iterdir())]
        roots = [d for d in candidates if all((d / s).is_dir() for s in SPLITS)]
        archives = sorted(p for p in path.iterdir() if p.is_file() and _is_archive(p))
        for kind, found in ((TREE, roots), (ARCHIVE, archives)):
            if len(found) > 1:
                raise _error(f"several candidate CIFAR-10 copies in {path}: "
                             f"{', '.join(map(str, found))}; pass the one to use as data_dir.")
            if found:
                return kind, found[0]
    if not download:
        raise _error(f"CIFAR-10 not found in {path} (download=False); {_layouts_tried(path)}.")
    _download(path)
    return BATCHES_DIR, path / BATCHES_DIR


def _download(path: Path) -> None:
    """Fetch the official python release into `path` with torchvision; a failed download leaves
    no folder behind that it created."""
    created = not path.exists()
    try:
        for train in (True, False):
            torchvision.datasets.CIFAR10(root=str(path), train=train, download=True)
    except Exception as e:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise _error(f"CIFAR-10 not found in {path} ({_layouts_tried(path)}), and downloading it "
                     f"there with torchvision failed: {type(e).__name__}: {e}") from e


def _decode_source(kind: str, path: Path) -> dict[str, torch.Tensor]:
    """Read and decode a source into train_x, train_y, test_x, test_y."""
    if kind == BATCHES_DIR:
        return _read_batches(path)
    members = _tree_from_archive(path) if kind == ARCHIVE else _tree_from_dir(path)
    return _decode_tree(members, path)


def _read_batches(path: Path) -> dict[str, torch.Tensor]:
    """The official python release: data_batch_1..5 and test_batch."""
    train = [_read_batch(path / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_batch(path / "test_batch")
    return {"train_x": torch.cat([x for x, _ in train]), "train_y": torch.cat([y for _, y in train]),
            "test_x": test_x, "test_y": test_y}


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: b"data" uint8 [n, 3072] (row-major CHW) and b"labels" [n]."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except Exception as e:  # a missing, truncated or foreign file: report it, whatever pickle says
        raise _error(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _error(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 [n, 3072]")
    if labels.shape != (len(data),) or not np.isin(labels, np.arange(len(CLASSES))).all():
        raise _error(f"{path}: b'labels' must be {len(data)} integers in 0..{len(CLASSES) - 1}")
    x = torch.from_numpy(data.copy()).view(-1, *IMAGE_SHAPE)  # [n, 3072] -> [n, 3, 32, 32]
    return x, torch.from_numpy(labels.astype(np.int64))


Members = dict[str, dict[str, list[tuple[str, bytes]]]]  # split -> class -> [(name, file bytes)]


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _tree_from_dir(root: Path) -> Members:
    """Image files of root/{train,test}/<class>/, as bytes."""
    members: Members = {}
    for split in SPLITS:
        members[split] = {}
        class_dirs = [p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")]
        for class_dir in sorted(class_dirs):
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and _is_image_name(p.name))
            try:
                members[split][class_dir.name] = [(str(p), p.read_bytes()) for p in files]
            except OSError as e:
                raise _error(f"cannot read an image file in {class_dir}: {e}") from e
    return members


def _tree_from_archive(path: Path) -> Members:
    """Image members [<top>/]{train,test}/<class>/<file> of a tar archive, read without unpacking."""
    members: Members = {split: {} for split in SPLITS}
    prefixes = set()
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not (member.isfile() and len(parts) >= 3 and parts[-3] in SPLITS
                        and _is_image_name(parts[-1])):
                    continue
                prefixes.add(parts[:-3])
                data = tar.extractfile(member).read()
                members[parts[-3]].setdefault(parts[-2], []).append((f"{path}:{member.name}", data))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise _error(f"cannot read archive {path}: {type(e).__name__}: {e}") from e
    if len(prefixes) != 1:
        tops = sorted("/".join(p) or "." for p in prefixes)
        found = f"{len(prefixes)} (under {', '.join(tops)})" if prefixes else "no"
        raise _error(f"archive {path} holds {found} image-folder trees train/<class>/<image>, "
                     "test/<class>/<image>; expected exactly one.")
    return members


def _decode_tree(members: Members, where: Path) -> dict[str, torch.Tensor]:
    """Decode image-folder members into uint8 [N, 3, 32, 32] images and labels, in sorted order."""
    tensors = {}
    for split in SPLITS:
        classes = members[split]
        if tuple(sorted(classes)) != CLASSES:
            raise _error(f"image folders in {where}: {split}/ has class folders {sorted(classes)}; "
                         f"expected exactly {list(CLASSES)} (case-sensitive).")
        empty = [c for c in CLASSES if not classes[c]]
        if empty:
            raise _error(f"image folders in {where}: no images in {split}/ {', '.join(empty)}.")
        files = [(label, *item) for label, c in enumerate(CLASSES) for item in sorted(classes[c])]
        x = torch.empty(len(files), *IMAGE_SHAPE, dtype=torch.uint8)
        for i, (_, name, data) in enumerate(files):
            x[i] = _decode_image(data, name)
        tensors[f"{split}_x"] = x
        tensors[f"{split}_y"] = torch.tensor([label for label, _, _ in files], dtype=torch.int64)
    return tensors


def _decode_image(data: bytes, name: str) -> torch.Tensor:
    """An image file's bytes as RGB uint8 [3, 32, 32]: torchvision's decoder, else Pillow's."""
    try:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = decode_image(encoded, mode=ImageReadMode.RGB)  # [3, H, W]
    except (RuntimeError, ValueError):  # a format torchvision does not decode
        try:
            with Image.open(io.BytesIO(data)) as pil:
                image = torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1)  # HWC -> CHW
        except Exception as e:  # Pillow raises many types for broken files
            raise _error(f"cannot read image {name}: {type(e).__name__}: {e}") from e
    if tuple(image.shape) != IMAGE_SHAPE:
        width, height = image.shape[2], image.shape[1]
        raise _error(f"image {name} is {width}x{height} pixels; CIFAR-10 images are 32x32.")
    return image


# ---------------------------------------------------------------------------------------------
# The decoded-tensor cache


def _fingerprint(kind: str, path: Path) -> str:
    """A short hash of the source's identity: its path and its files' names, sizes and mtimes."""
    if kind == TREE:
        files = sorted(p for split in SPLITS for p in (path / split).rglob("*") if p.is_file())
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        files = [path]
    identity = [CACHE_FORMAT, str(path.resolve()), kind]
    for f in files:
        stat = f.stat()
        name = f.relative_to(path) if f != path else f.name
        identity.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when there is no readable cache file."""
    try:
        cached = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None
    return cached


