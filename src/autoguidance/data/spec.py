"""Turn the CLI's `--dataset` text into a dataset: a built-in name with an optional split, or a path."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserInputError
from .builtin import BUILTIN_NAMES, SPLITS, load_builtin
from .dataset import ImageDataset
from .folder import load_image_folder


def load_dataset(spec: str) -> ImageDataset:
    """'digits', 'mnist', 'digits:test', 'mnist:all' (a bare name means its 'train' split), or a path to
    a directory or .zip of images (see `load_image_folder`). Images (N, C, H, W) float32 in [-1, 1].
    """
    name, sep, split = spec.partition(":")
    # Built-in names win over paths: a directory called 'digits' must be given as './digits'.
    if name in BUILTIN_NAMES:
        if sep and split not in SPLITS:
            raise UserInputError(
                f"unknown split {split!r} in dataset {spec!r}: choose one of {', '.join(SPLITS)}"
            )
        return load_builtin(name, split if sep else "train")
    if Path(spec).exists():
        return load_image_folder(spec)
    raise UserInputError(
        f"dataset {spec!r} is neither a built-in ({', '.join(BUILTIN_NAMES)}, optionally with "
        f"':{'|:'.join(SPLITS)}') nor an existing directory or .zip"
    )
