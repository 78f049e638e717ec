import math
import pickle
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image

from shared import data as D
from shared.data import (CLASSES, DATA_DIR_ENV, DEFAULT_DATA_DIR, Cifar10, DatasetError, TrainLoader,
                         augment, channel_stats, epoch_randomness, eval_batches, load_cifar10,
                         data_source, normalize, resolve_data_dir)

N_TRAIN, N_TEST = 3, 2  # images per class in the generated trees


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def write_tree(root: Path, classes=CLASSES, size=(32, 32)) -> dict[str, torch.Tensor]:
    """PNG image folders root/{train,test}/<class>/<i>.png; returns the expected tensors."""
    expected = {}
    for split, per_class in (("train", N_TRAIN), ("test", N_TEST)):
        x = random_images(len(classes) * per_class, seed=len(split))
        for i, image in enumerate(x):
            folder = root / split / classes[i // per_class]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = image.permute(1, 2, 0).numpy()  # CHW -> HWC
            Image.fromarray(pixels).resize(size).save(folder / f"{i % per_class}.png")
        expected[f"{split}_x"] = x
        expected[f"{split}_y"] = torch.arange(len(classes)).repeat_interleave(per_class)
    return expected


def write_archive(tree: Path, path: Path, top: str = "") -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tar:
        for split in ("train", "test"):
            tar.add(tree / split, arcname=f"{top}/{split}" if top else split)
    return path


def assert_matches(data: Cifar10, expected: dict[str, torch.Tensor]) -> None:
    for name, tensor in expected.items():
        assert torch.equal(getattr(data, name), tensor), name
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    mean, std = channel_stats(expected["train_x"])
    assert torch.equal(data.mean, mean) and torch.equal(data.std, std)


@pytest.fixture
def tree(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    return tmp_path / "tree", write_tree(tmp_path / "tree")


# ---------------------------------------------------------------------------------------------
# Reading the layouts


def test_image_folder_tree_loads_exact_pixels(tree, tmp_path):
    root, expected = tree
    data = load_cifar10(root, download=False, cache_dir=tmp_path / "cache")
    assert data.train_x.shape == (10 * N_TRAIN, 3, 32, 32)
    assert data.test_x.shape == (10 * N_TEST, 3, 32, 32)
    assert_matches(data, expected)
    assert data.source.startswith(f"image-folder tree {root.name}, pixels+labels sha256 ")
    assert str(root.parent) not in data.source  # no machine path in what provenance records


@pytest.mark.parametrize("layout", ["archive path", "archive .tar path", "subfolder", "archive in dir"])
def test_other_image_folder_layouts_load_identically(tree, tmp_path, layout):
    root, expected = tree
    holder = tmp_path / "holder"
    holder.mkdir()
    if layout == "archive path":
        path = write_archive(root, tmp_path / "cifar.tar.gz", top="cifar10")
    elif layout == "archive .tar path":
        path = write_archive(root, tmp_path / "cifar.tar")
    elif layout == "subfolder":
        root.rename(holder / "cifar10")
        path = holder
    else:
        write_archive(root, holder / "cifar.tgz")
        path = holder
    data = load_cifar10(path, download=False, cache_dir=tmp_path / "cache")
    assert_matches(data, expected)


def write_batches(root: Path, per_batch: int = 4) -> dict[str, torch.Tensor]:
    """A fake cifar-10-batches-py/ in the official pickle layout; returns the expected tensors."""
    folder = root / D.BATCHES_DIR
    folder.mkdir(parents=True)
    x, y = random_images(6 * per_batch, seed=1), torch.arange(6 * per_batch) % 10
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        part = slice(i * per_batch, (i + 1) * per_batch)
        batch = {b"batch_label": name.encode(), b"labels": y[part].tolist(),
                 b"data": x[part].reshape(per_batch, -1).numpy(), b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    n = 5 * per_batch
    return {"train_x": x[:n], "train_y": y[:n], "test_x": x[n:], "test_y": y[n:]}


def test_official_python_batches_load(tmp_path):
    expected = write_batches(tmp_path / "dir")
    data = load_cifar10(tmp_path / "dir", download=False, cache_dir=tmp_path / "cache")
    assert_matches(data, expected)
    assert data.source.startswith("cifar-10-batches-py cifar-10-batches-py, pixels+labels sha256 ")


def test_data_dir_resolution(tree, tmp_path, monkeypatch):
    root, expected = tree
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() == DEFAULT_DATA_DIR
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    assert resolve_data_dir() == root and resolve_data_dir(tmp_path) == tmp_path
    assert_matches(load_cifar10(download=False, cache_dir=tmp_path / "cache"), expected)


def test_second_load_reads_the_cache(tree, tmp_path, monkeypatch):
    root, expected = tree
    cache = tmp_path / "cache"
    first = load_cifar10(root, download=False, cache_dir=cache)
    # one cache file and its source beside it (what a stored run's data is compared with), no temp file
    assert sorted(p.suffix for p in cache.iterdir()) == [".pt", ".source"]
    assert data_source(root, cache) == first.source

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(D, "decode_source", no_decoding)
    second = load_cifar10(root, download=False, cache_dir=cache)
    assert_matches(second, expected)
    assert second.source == first.source
    (root / "train" / "cat" / "0.png").unlink()  # the source changed: the cache no longer applies
    with pytest.raises(AssertionError, match="decoded again"):
        load_cifar10(root, download=False, cache_dir=cache)


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as e:
        load_cifar10(missing, download=False, cache_dir=tmp_path / "cache")
    assert f"{missing} does not exist" in str(e.value)
    assert DATA_DIR_ENV in str(e.value) and "download=True" in str(e.value)


def test_empty_dir_without_download_names_the_layouts(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert f"CIFAR-10 not found in {tmp_path}" in message
    assert f"{tmp_path / 'cifar-10-batches-py'}" in message and f"{tmp_path}/train/" in message
    assert DATA_DIR_ENV in message and "download=True" in message


def test_failed_download_is_explained(tmp_path, monkeypatch):
    def offline(root, **kwargs):
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does before it downloads
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetError, match="downloading it there with torchvision failed") as e:
        load_cifar10(tmp_path / "new", cache_dir=tmp_path / "cache")
    assert isinstance(e.value.__cause__, urllib.error.URLError)
    assert str(tmp_path / "new") in str(e.value) and DATA_DIR_ENV in str(e.value)
    assert not (tmp_path / "new").exists(), "a failed download leaves the folder it created"


def test_wrong_class_folders(tmp_path):
    write_tree(tmp_path / "tree", classes=tuple(c.capitalize() for c in CLASSES))
    message = r"train/ has class folders \['Airplane'.*expected exactly"
    with pytest.raises(DatasetError, match=message) as e:
        load_cifar10(tmp_path / "tree", download=False, cache_dir=tmp_path / "cache")
    assert DATA_DIR_ENV in str(e.value)


def test_wrong_image_size(tmp_path):
    write_tree(tmp_path / "tree", size=(32, 31))
    message = r"image .*0\.png is 32x31 pixels; CIFAR-10 images are 32x32"
    with pytest.raises(DatasetError, match=message):
        load_cifar10(tmp_path / "tree", download=False, cache_dir=tmp_path / "cache")


def test_unreadable_image(tree, tmp_path):
    root, _ = tree
    (root / "test" / "dog" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*dog/1\.png") as e:
        load_cifar10(root, download=False, cache_dir=tmp_path / "cache")
    assert DATA_DIR_ENV in str(e.value)


def test_archive_without_image_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    with pytest.raises(DatasetError, match="holds no image-folder trees"):
        load_cifar10(tmp_path / "other.tar.gz", download=False, cache_dir=tmp_path / "cache")


def test_corrupt_batch_file(tmp_path):
    write_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read CIFAR-10 batch .*data_batch_3"):
        load_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# Statistics, normalisation, augmentation


def test_channel_stats_match_float64_reference():
    x = random_images(50) // 2  # not centred, so the mean matters
    mean, std = channel_stats(x, chunk_size=7)
    reference = x.double() / 255
    assert mean.dtype == std.dtype == torch.float32
    expected_std = reference.std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean.double(), reference.mean(dim=(0, 2, 3)), rtol=0, atol=1e-7)
    torch.testing.assert_close(std.double(), expected_std, rtol=0, atol=1e-7)


def test_normalize_is_exact():
    x, mean, std = random_images(4), torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    assert torch.equal(out, (x.float() / 255 - mean[:, None, None]) / std[:, None, None])


def test_augment_equals_torchvision_pad_crop_flip():
    x = random_images(64)
    g = torch.Generator().manual_seed(1)
    offsets, flips = torch.randint(0, 9, (64, 2), generator=g), torch.rand(64, generator=g) < 0.5
    offsets[:4] = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0]])
    expected = []
    for image, (top, left), flip in zip(x, offsets.tolist(), flips.tolist()):
        crop = TF.crop(TF.pad(image, [4], fill=0), top, left, 32, 32)
        expected.append(TF.horizontal_flip(crop) if flip else crop)
    out = augment(x, offsets, flips)
    assert out.dtype == torch.uint8 and torch.equal(out, torch.stack(expected))


def test_padding_is_zero_in_pixel_space():
    white = torch.full((3, 3, 32, 32), 255, dtype=torch.uint8)
    out = augment(white, torch.tensor([[0, 0], [0, 0], [8, 8]]), torch.tensor([False, True, False]))
    inside = torch.zeros(3, 32, 32, dtype=torch.bool)
    inside[0, 4:, 4:] = inside[1, 4:, :28] = inside[2, :28, :28] = True
    assert torch.equal(out, torch.where(inside[:, None], 255, 0).to(torch.uint8).expand(3, 3, 32, 32))


def test_crop_offsets_and_flips_are_uniform():
    n = 81 * 500
    _, offsets, flips = epoch_randomness(n, seed=3, epoch=7, device="cpu")
    counts = torch.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81).double()
    assert counts.shape == (81,) and counts.min() > 0
    chi2 = ((counts - 500) ** 2 / 500).sum().item()
    assert chi2 < 200  # 80 degrees of freedom: mean 80, sd 12.6; P(chi2 > 200) < 1e-10
    rate = flips.double().mean().item()
    assert abs(rate - 0.5) < 4 * 0.5 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# Loaders


def make_loader(n: int = 10, batch_size: int = 4, seed: int = 0, augment: bool = True) -> TrainLoader:
    x = random_images(n)
    return TrainLoader(x, torch.arange(n), *channel_stats(x), batch_size, seed, augment)


def test_loader_keeps_partial_batch_and_permutes_everything():
    loader = make_loader(n=10, batch_size=4)
    assert len(loader) == 3
    for epoch in range(3):
        batches = list(loader.epoch(epoch))
        assert [len(y) for _, y in batches] == [4, 4, 2]
        assert all(x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) for x, _ in batches)
        assert torch.equal(torch.cat([y for _, y in batches]).sort().values, torch.arange(10))


def test_loader_batches_are_augmented_permuted_images():
    loader = make_loader(n=10, batch_size=4)
    perm, offsets, flips = epoch_randomness(10, loader.seed, 5, "cpu")
    expected = normalize(augment(loader.x[perm], offsets, flips), loader.mean, loader.std)
    assert torch.equal(torch.cat([x for x, _ in loader.epoch(5)]), expected)
    plain = make_loader(n=10, batch_size=4, augment=False)
    expected = normalize(plain.x[perm], plain.mean, plain.std)
    assert torch.equal(torch.cat([x for x, _ in plain.epoch(5)]), expected)


def test_loader_epochs_are_pure_functions_of_seed_and_epoch():
    def epoch(seed, e):
        return torch.cat([x for x, _ in make_loader(seed=seed).epoch(e)])

    assert torch.equal(epoch(0, 1), epoch(0, 1))
    assert not torch.equal(epoch(0, 1), epoch(0, 2))
    assert not torch.equal(epoch(0, 1), epoch(1, 1))


def test_eval_batches_in_order_without_augmentation():
    x, y = random_images(25), torch.arange(25)
    mean, std = channel_stats(x)
    batches = list(eval_batches(x, y, mean, std, batch_size=10))
    assert [len(b) for _, b in batches] == [10, 10, 5]
    assert torch.equal(torch.cat([b for _, b in batches]), y)
    assert torch.equal(torch.cat([a for a, _ in batches]), normalize(x, mean, std))


# ---------------------------------------------------------------------------------------------
# The dataset object


def small_dataset() -> Cifar10:
    train_x, test_x = random_images(100), random_images(50, seed=1)
    train_y, test_y = torch.arange(100) % 10, torch.arange(50) % 10
    return Cifar10(train_x, train_y, test_x, test_y, *channel_stats(train_x), source="test")


def test_subset_is_class_balanced_and_deterministic():
    data = small_dataset()
    sub = data.subset(30)
    assert torch.equal(sub.train_x, data.train_x[:30]) and torch.equal(sub.train_y, data.train_y[:30])
    assert torch.equal(torch.bincount(sub.train_y), torch.full((10,), 3))
    assert torch.equal(sub.mean, channel_stats(data.train_x[:30])[0])
    assert sub.test_x is data.test_x and sub.source == "test"
    both = data.subset(None, 20)
    assert both.train_x is data.train_x and torch.equal(both.test_y, data.test_y[:20])
    for n in (9, 101):
        with pytest.raises(ValueError, match=f"n_train must be in 10..100, got {n}"):
            data.subset(n)


def test_subset_needs_enough_images_of_each_class():
    data = small_dataset()
    data = Cifar10(data.train_x, torch.zeros(100, dtype=torch.int64), data.test_x, data.test_y,
                   data.mean, data.std, data.source)
    with pytest.raises(ValueError, match="needs 2 images per class; automobile has 0"):
        data.subset(20)


def test_to_moves_every_tensor():
    moved = small_dataset().to("meta")
    assert all(t.device.type == "meta" for t in (moved.train_x, moved.train_y, moved.test_x,
                                                  moved.test_y, moved.mean, moved.std))
    assert moved.source == "test"


# ---------------------------------------------------------------------------------------------
# The real archive beside the repository (absent on most machines)


@pytest.mark.slow
def test_the_real_dataset(real_cifar10, tmp_path):
    """Whatever copy a user has (official batches, image folders, an archive of them) decodes to
    CIFAR-10's 50,000 + 10,000 balanced images with its known channel means."""
    data = load_cifar10(real_cifar10, download=False, cache_dir=tmp_path)
    assert data.train_x.shape == (50_000, 3, 32, 32) and data.test_x.shape == (10_000, 3, 32, 32)
    assert torch.equal(torch.bincount(data.train_y), torch.full((10,), 5000))
    assert torch.equal(torch.bincount(data.test_y), torch.full((10,), 1000))
    torch.testing.assert_close(data.mean, torch.tensor([0.491, 0.482, 0.447]), rtol=0, atol=2e-3)


def test_a_truncated_archive_or_a_plain_file_is_named_and_nothing_is_cached(tree, tmp_path):
    tree, _ = tree
    """A data path that is a truncated .tar.gz, or a file that is no archive at all: one error
    naming the path (and the ways to get CIFAR-10), and no cache file, whole or half-written."""
    whole = tmp_path / "cifar.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        tar.add(tree / "train", arcname="train")
        tar.add(tree / "test", arcname="test")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    cache = tmp_path / "cache"
    for path, message in ((truncated, "cannot read archive"), (plain, "is a file but not a .tar.gz")):
        with pytest.raises(DatasetError, match=message) as e:
            load_cifar10(path, download=False, cache_dir=cache)
        assert str(path) in str(e.value) and DATA_DIR_ENV in str(e.value)
    assert not cache.exists() or not any(cache.iterdir())
