import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests compute into temporary stores from whatever tree they run in, committed or not: they may use
# uncommitted code (shared.results.code_version; the tests of that check clear this themselves)
os.environ.setdefault("BN_ALLOW_DIRTY", "1")

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="session")
def tiny_image_folder(tmp_path_factory):
    """A CIFAR-10-shaped image-folder tree: 20 train and 10 test PNG images per class."""
    root = tmp_path_factory.mktemp("tiny_cifar")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:04d}.png")
    return root


# The JPEG copy of CIFAR-10 that may lie beside the repository (../shared/data); never committed.
REAL_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def real_archive():
    if not REAL_ARCHIVE.exists():
        pytest.skip(f"no CIFAR-10 JPEG archive beside the repository at {REAL_ARCHIVE}")
    return REAL_ARCHIVE
