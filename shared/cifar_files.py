"""CIFAR-10 on disk: finding a copy, reading and decoding it, and the decoded-tensor cache.

The layouts `shared.data.load_cifar10` reads, in the order it looks for them, are listed in
shared/data.py's docstring; this module finds the first (`find_source`), decodes it into uint8
tensors (`decode_source`) and names the cache file for it (`fingerprint`). Every failure is a
`DatasetError` that says what was looked for and how to get CIFAR-10.
"""

import hashlib
import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from .paths import DATA_DIR

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
DEFAULT_DATA_DIR = DATA_DIR
CACHE_DIR = DATA_DIR / "cache"  # the decoded tensors, one file per source
DATA_DIR_ENV = "CIFAR10_DIR"

BATCHES_DIR = "cifar-10-batches-py"  # also the name of that source kind
ARCHIVE, TREE = "image-folder archive", "image-folder tree"  # the other source kinds
SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
IMAGE_SUFFIXES = frozenset(Image.registered_extensions())  # every extension Pillow can read
IMAGE_SHAPE = (3, 32, 32)
CACHE_FORMAT = "2"  # bump when what the cache holds changes, so old cache files are not read
HOW_TO_GET = (
    "How to get CIFAR-10: on a machine with internet, load_cifar10(download=True) lets torchvision "
    f"download the official release into the data dir (default {DEFAULT_DATA_DIR}); or set "
    f"${DATA_DIR_ENV} (or pass data_dir) to a folder holding {BATCHES_DIR}/, or image folders "
    "train/<class>/* and test/<class>/*, or a .tar.gz of such folders, or to that .tar.gz itself."
)


class DatasetError(RuntimeError):
    """CIFAR-10 is missing or malformed; the message says what was looked for and how to fix it."""


def error(what: str) -> DatasetError:
    return DatasetError(f"{what}\n{HOW_TO_GET}")


# ---------------------------------------------------------------------------------------------
# Finding and reading the data


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir` if given, else $CIFAR10_DIR if set, else `data/` in the repository."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def content_digest(tensors: dict[str, torch.Tensor]) -> str:
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


def find_source(path: Path, download: bool) -> tuple[str, Path]:
    """The layout found at `path` (downloading if allowed and none is): (kind, path to read)."""
    if path.is_file():
        if _is_archive(path):
            return ARCHIVE, path
        raise error(f"{path} is a file but not a .tar.gz/.tgz/.tar archive of image folders")
    if not path.exists() and (_is_archive(path) or not download):
        raise error(f"CIFAR-10 not found: {path} does not exist.")
    if (path / BATCHES_DIR).is_dir():
        return BATCHES_DIR, path / BATCHES_DIR
    if path.is_dir():
        candidates = [path, *sorted(path.iterdir())]
        roots = [d for d in candidates if all((d / s).is_dir() for s in SPLITS)]
        archives = sorted(p for p in path.iterdir() if p.is_file() and _is_archive(p))
        for kind, found in ((TREE, roots), (ARCHIVE, archives)):
            if len(found) > 1:
                raise error(f"several candidate CIFAR-10 copies in {path}: "
                             f"{', '.join(map(str, found))}; pass the one to use as data_dir.")
            if found:
                return kind, found[0]
    if not download:
        raise error(f"CIFAR-10 not found in {path} (download=False); {_layouts_tried(path)}.")
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
        raise error(f"CIFAR-10 not found in {path} ({_layouts_tried(path)}), and downloading it "
                     f"there with torchvision failed: {type(e).__name__}: {e}") from e


def decode_source(kind: str, path: Path) -> dict[str, torch.Tensor]:
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
        raise error(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise error(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 [n, 3072]")
    if labels.shape != (len(data),) or not np.isin(labels, np.arange(len(CLASSES))).all():
        raise error(f"{path}: b'labels' must be {len(data)} integers in 0..{len(CLASSES) - 1}")
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
                raise error(f"cannot read an image file in {class_dir}: {e}") from e
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
        raise error(f"cannot read archive {path}: {type(e).__name__}: {e}") from e
    if len(prefixes) != 1:
        tops = sorted("/".join(p) or "." for p in prefixes)
        found = f"{len(prefixes)} (under {', '.join(tops)})" if prefixes else "no"
        raise error(f"archive {path} holds {found} image-folder trees train/<class>/<image>, "
                     "test/<class>/<image>; expected exactly one.")
    return members


def _decode_tree(members: Members, where: Path) -> dict[str, torch.Tensor]:
    """Decode image-folder members into uint8 [N, 3, 32, 32] images and labels, in sorted order."""
    tensors = {}
    for split in SPLITS:
        classes = members[split]
        if tuple(sorted(classes)) != CLASSES:
            raise error(f"image folders in {where}: {split}/ has class folders {sorted(classes)}; "
                         f"expected exactly {list(CLASSES)} (case-sensitive).")
        empty = [c for c in CLASSES if not classes[c]]
        if empty:
            raise error(f"image folders in {where}: no images in {split}/ {', '.join(empty)}.")
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
            raise error(f"cannot read image {name}: {type(e).__name__}: {e}") from e
    if tuple(image.shape) != IMAGE_SHAPE:
        width, height = image.shape[2], image.shape[1]
        raise error(f"image {name} is {width}x{height} pixels; CIFAR-10 images are 32x32.")
    return image


# ---------------------------------------------------------------------------------------------
# The decoded-tensor cache


def fingerprint(kind: str, path: Path) -> str:
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


def load_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when there is no readable cache file."""
    try:
        cached = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None
    return cached
