"""Image output helpers: float samples to uint8, grids of images, atomic PNG files (Pillow).

Images here are uint8 arrays laid out (H, W, C) with C = 1 (grayscale) or 3 (RGB), the layout that
Pillow and most viewers expect; the networks work in (B, C, H, W) floats in [-1, 1].
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from . import atomic


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats with data range [-1, 1] -> (B, H, W, C) uint8 on the same device.

    floor(x * 127.5 + 128) clipped to [0, 255] equals round((x + 1) * 127.5): -1 -> 0, 0 -> 128, 1 -> 255
    (EDM2's mapping). Values outside [-1, 1] saturate.
    """
    if x.ndim != 4:
        raise ValueError(f"expected images shaped (B, C, H, W), got {tuple(x.shape)}")
    y = (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # the cast truncates, i.e. floors
    return y.permute(0, 2, 3, 1).contiguous()


def make_grid(cells: np.ndarray | torch.Tensor, pad: int = 1, fill: int = 255) -> np.ndarray:
    """Tile (R, K, H, W, C) uint8 images into one (R H + (R-1) pad, K W + (K-1) pad, C) image.

    Row r, column k of the result is cells[r, k]; `pad` pixels of value `fill` separate neighbours
    (none around the border).
    """
    cells = cells.cpu().numpy() if isinstance(cells, torch.Tensor) else np.asarray(cells)
    if cells.ndim != 5:
        raise ValueError(f"expected cells shaped (rows, cols, H, W, C), got {cells.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    rows, cols, h, w, c = cells.shape
    height, width = rows * h + max(rows - 1, 0) * pad, cols * w + max(cols - 1, 0) * pad
    out = np.full((height, width, c), fill, dtype=cells.dtype)
    for r in range(rows):
        for k in range(cols):
            y, x = r * (h + pad), k * (w + pad)
            out[y : y + h, x : x + w] = cells[r, k]
    return out


def save_png(path: str | os.PathLike, image: np.ndarray | torch.Tensor) -> None:
    """Atomically write an (H, W, C) uint8 image, C = 1 (grayscale) or 3 (RGB), as PNG."""
    image = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 1 or 3) uint8 image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    # format="PNG" because the temporary name ends in .tmp.png only by convention; be explicit.
    atomic.write_with(path, lambda tmp: pil.save(tmp, format="PNG"))
