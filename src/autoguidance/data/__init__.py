"""Datasets as in-memory tensors in [-1, 1]: bundled ones (digits, MNIST), image folders and zip archives,
and the deterministic per-step batch indices that training draws from them."""

from .batches import batch_indices
from .builtin import BUILTIN_NAMES, load_builtin
from .dataset import ImageDataset
from .folder import load_image_folder
from .spec import load_dataset

__all__ = [
    "BUILTIN_NAMES",
    "ImageDataset",
    "batch_indices",
    "load_builtin",
    "load_dataset",
    "load_image_folder",
]
