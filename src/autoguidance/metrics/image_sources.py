"""Where evaluated images come from, as uint8 batches (N, H, W, C): image folders and zips (streamed, so that
50,000 images need not fit in memory), datasets in memory, and a model generating on the fly.

Every source can be split across torchrun processes the way `distributed.shard_seeds` splits seeds (whole
batches dealt out in turn), so that each process sees exactly the batches a single process would.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.folder import LABELS_FILE, _decode, _is_image, _open_source, _parse_labels
from ..distributed import shard_seeds
from ..errors import UserInputError


def dataset_uint8(images: torch.Tensor) -> torch.Tensor:
    """Dataset images (N, C, H, W) in [-1, 1] (k / 127.5 - 1 for pixel value k) -> (N, H, W, C) uint8."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@dataclass(frozen=True)
class FolderInfo:
    files: list[str]
    labels: torch.Tensor | None  # (N,) from dataset.json, or None
    shape: tuple[int, int, int]  # (H, W, C) of the first image; all must match


GENERATE_FILE = "generate.json"  # what `autoguidance generate` writes beside its PNGs


def _generated_labels(data: bytes, files: list[str]) -> tuple[np.ndarray, int] | None:
    """Intended classes from `autoguidance generate`'s generate.json ({"labels": {seed: class}}) for files
    named seedNNNNNN.png; None when the folder is not exactly that (then no agreement is reported)."""
    try:
        labels = json.loads(data).get("labels")
    except (ValueError, AttributeError):
        return None
    if not isinstance(labels, dict):
        return None
    out = []
    for f in files:
        m = re.fullmatch(r"seed(\d+)\.png", f)
        if m is None or str(int(m.group(1))) not in labels:
            return None
        out.append(int(labels[str(int(m.group(1)))]))
    return np.array(out, dtype=np.int64), max(out) + 1


def scan_folder(path: str | os.PathLike) -> FolderInfo:
    """List the images of a directory or .zip (sorted) and read the first one's shape; check dataset.json."""
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"image path {str(p)!r} does not exist")
    with _open_source(p) as (names, read):
        files = [n for n in names if _is_image(n)]
        if not files:
            raise UserInputError(f"no PNG or JPEG images found in {str(p)!r}")
        parsed = _parse_labels(read(LABELS_FILE), files) if LABELS_FILE in names else None
        if parsed is None and GENERATE_FILE in names:
            parsed = _generated_labels(read(GENERATE_FILE), files)
        first = _decode(files[0], read(files[0]))
    labels = None if parsed is None else torch.from_numpy(parsed[0])
    return FolderInfo(files=files, labels=labels, shape=tuple(first.shape))


def folder_batches(
    path: str | os.PathLike, info: FolderInfo, batch: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """This process's batches of (uint8 images (n, H, W, C), labels (n,) or None), in file order."""
    mine = shard_seeds(range(len(info.files)), rank, world_size, batch)
    with _open_source(Path(path)) as (_, read):
        for start in range(0, len(mine), batch):
            rows = mine[start : start + batch]
            arrays = []
            for i in rows:
                arr = _decode(info.files[i], read(info.files[i]))
                if arr.shape != info.shape:
                    h, w, c = info.shape
                    raise UserInputError(
                        f"images differ: {info.files[0]!r} is {w}x{h}x{c}, {info.files[i]!r} is "
                        f"{arr.shape[1]}x{arr.shape[0]}x{arr.shape[2]}"
                    )
                arrays.append(torch.from_numpy(np.ascontiguousarray(arr).copy()))
            labels = None if info.labels is None else info.labels[rows]
            yield torch.stack(arrays), labels
