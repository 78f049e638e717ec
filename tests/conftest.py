import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.cifar_files import CLASSES, DatasetError, find_source, resolve_data_dir

# Tests compute into temporary stores from whatever tree they run in, committed or not: they may use
# uncommitted code (shared.provenance.code_version; the tests of that check clear this themselves)
os.environ.setdefault("BN_ALLOW_DIRTY", "1")



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


@pytest.fixture(scope="session")
def real_cifar10() -> Path:
    """The real CIFAR-10 copy in the data dir ($CIFAR10_DIR, else data/; never committed), in
    whichever layout shared.data reads; the test is skipped where there is none."""
    try:
        return find_source(resolve_data_dir(), download=False)[1]
    except DatasetError:
        pytest.skip("no CIFAR-10 copy in the data dir ($CIFAR10_DIR, else data/)")
