"""Image datasets from a directory tree or a .zip archive of PNG/JPEG files (the EDM/StyleGAN layout).

Labels, when present, come from `dataset.json` at the root: {"labels": [["relative/path.png", 3], ...]}
(or {"labels": null} for an unlabelled set). Paths are relative to the root, with '/' separators. Every
problem with the files is reported as a one-line UserInputError that names the offending file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError
from .dataset import ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABELS_FILE = "dataset.json"

# Pillow modes that hold one grey channel; everything else is read as RGB (alpha and palettes dropped).
_GRAY_MODES = ("1", "L", "LA", "La")
_GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _is_image(rel: str) -> bool:
    base = rel.rsplit("/", 1)[-1]
    # Skip hidden files and macOS archive debris (._foo.png, __MACOSX/), which are not images.
    return rel.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".") and "__MACOSX/" not in rel


@contextmanager
def _open_source(path: Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
    """All file names (relative, '/'-separated, sorted) under `path` and a function reading one of them."""
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        yield names, _reporting_errors(lambda rel: (path / rel).read_bytes())
        return
    if path.suffix.lower() != ".zip":
        raise UserInputError(f"dataset path {str(path)!r} is neither a directory nor a .zip archive")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserInputError(f"cannot open zip archive {str(path)!r}: {e}") from None
    with archive:
        yield (
            sorted(info.filename for info in archive.infolist() if not info.is_dir()),
            _reporting_errors(archive.read),
        )


def _reporting_errors(read: Callable[[str], bytes]) -> Callable[[str], bytes]:
    """`read`, with I/O and zip member errors (bad CRC, unreadable file) as one-line UserInputErrors."""

    def checked(rel: str) -> bytes:
        try:
            return read(rel)
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise UserInputError(f"cannot read {rel!r}: {e}") from None

    return checked


def _decode(rel: str, data: bytes) -> np.ndarray:
    """Pixels (H, W, C) uint8 (C = 1 or 3) of one encoded image; UserInputError if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib, a core dependency

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: Image.open only reads the header, truncation shows up here
            if img.mode in _GRAY16_MODES:
                # 16-bit grayscale PNG: keep the top 8 bits so that all images share one 0..255 scale.
                return (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)[:, :, None]
            if img.mode in ("I", "F"):
                raise UserInputError(f"image {rel!r} has unsupported pixel mode {img.mode!r}: use 8-bit")
            gray = img.mode in _GRAY_MODES
            arr = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8)
    except UserInputError:
        raise
    except UnidentifiedImageError:  # its message names an in-memory buffer, which helps nobody
        raise UserInputError(f"cannot read image {rel!r}: not a valid PNG or JPEG file") from None
    except Exception as e:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserInputError(f"cannot read image {rel!r}: {message}") from None
    return arr[:, :, None] if gray else arr


def _normalise_rel(rel: str) -> str:
    return rel.replace("\\", "/").removeprefix("./")


def _parse_labels(data: bytes, files: list[str]) -> tuple[np.ndarray, int] | None:
    """Labels (N,) int64 aligned with `files`, and the class count, from dataset.json; None if unlabelled."""
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{LABELS_FILE} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("labels") is None:
        return None  # no labels key, or explicitly null: EDM's convention for an unlabelled set
    entries = meta["labels"]
    if not isinstance(entries, list):
        raise UserInputError(f'{LABELS_FILE}: "labels" must be a list of [path, label] pairs')
    by_file: dict[str, int] = {}
    for entry in entries:
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str)):
            raise UserInputError(f"{LABELS_FILE}: each label entry must be [path, label], got {entry!r}")
        rel, label = _normalise_rel(entry[0]), entry[1]
        # bool is an int subclass in Python; true/false in the JSON is a mistake, not class 1/0.
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise UserInputError(f"{LABELS_FILE}: label of {rel!r} is {label!r}, not a non-negative integer")
        by_file[rel] = label
    missing = [f for f in files if f not in by_file]
    if missing:
        raise UserInputError(
            f"{LABELS_FILE} has no label for {len(missing)} of {len(files)} images, e.g. {missing[0]!r}"
        )
    unknown = sorted(set(by_file) - set(files))
    if unknown:
        raise UserInputError(
            f"{LABELS_FILE} labels {len(unknown)} files that are not images in the set, e.g. {unknown[0]!r}"
        )
    labels = np.array([by_file[f] for f in files], dtype=np.int64)
    return labels, int(labels.max()) + 1


def _read_pixels(files: list[str], read: Callable[[str], bytes]) -> np.ndarray:
    """Decode `files` into one array (N, H, W, C) uint8, checking that they share size and channels."""
    pixels: np.ndarray | None = None  # allocated once the first image gives the shape
    for i, rel in enumerate(files):
        arr = _decode(rel, read(rel))
        if pixels is None:
            h, w, c = arr.shape
            if h != w:
                raise UserInputError(f"images must be square: {rel!r} is {w}x{h}")
            pixels = np.empty((len(files), h, w, c), dtype=np.uint8)
        elif arr.shape[:2] != pixels.shape[1:3]:
            raise UserInputError(
                f"images differ in size: {files[0]!r} is {pixels.shape[2]}x{pixels.shape[1]}, "
                f"{rel!r} is {arr.shape[1]}x{arr.shape[0]}"
            )
        elif arr.shape[2] != pixels.shape[3]:
            kind = {1: "grayscale", 3: "RGB"}
            raise UserInputError(
                f"images differ in channels: {files[0]!r} is {kind[pixels.shape[3]]}, "
                f"{rel!r} is {kind[arr.shape[2]]}"
            )
        pixels[i] = arr
    assert pixels is not None  # files is not empty
    return pixels


def load_image_folder(path: str | os.PathLike) -> ImageDataset:
    """Read every PNG/JPEG under a directory or in a .zip archive, in sorted path order.

    Returns images (N, C, H, W) float32 in [-1, 1], C = 1 for grayscale and 3 for colour, with labels (N,)
    from `dataset.json` if it has any (num_classes = largest label + 1), else unlabelled. All images must
    share one square size and one channel count.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"dataset path {str(path)!r} does not exist")
    with _open_source(path) as (names, read):
        files = [n for n in names if _is_image(n)]
        if not files:
            raise UserInputError(f"no PNG or JPEG images found in {str(path)!r}")
        # Labels first: a bad dataset.json is reported before minutes of decoding, not after.
        parsed = _parse_labels(read(LABELS_FILE), files) if LABELS_FILE in names else None
        pixels = _read_pixels(files, read)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # 0..255 -> -1..1
    return ImageDataset(
        images=images.contiguous(),
        labels=None if parsed is None else torch.from_numpy(parsed[0]),
        num_classes=0 if parsed is None else parsed[1],
        name=path.name,
    )
