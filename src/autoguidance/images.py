"""Image output helpers: float samples to uint8, grids of images, atomic PNG files (Pillow).

Images here are uint8 arrays laid out (H, W, C) with C = 1 (grayscale), 3 (RGB) or 4 (RGBA: a network
with a fourth channel and no decoder), the layout that Pillow and most viewers expect; the networks work
in (B, C, H, W) floats in [-1, 1].
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from .errors import UserInputError
from .io import atomic

PNG_CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA


def check_png_channels(channels: int) -> None:
    """UserInputError unless images of `channels` channels can be written as PNG (before sampling)."""
    if channels not in PNG_CHANNELS:
        raise UserInputError(
            f"the network makes {channels}-channel images, which PNG cannot hold (1, 3 or 4 channels); "
            "a latent network needs its decoder (--vae)"
        )


def as_read_back(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 -> the images that reading their PNGs back gives (data/folder.py): RGBA's alpha
    dropped, so that measuring a model on the fly equals measuring the folder `generate` writes."""
    return images[..., :3] if images.shape[-1] == 4 else images


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats with data range [-1, 1] -> (B, H, W, C) uint8 on the same device.

    floor(x * 127.5 + 128) clipped to [0, 255] equals round((x + 1) * 127.5): -1 -> 0, 0 -> 128, 1 -> 255
    (EDM2's mapping). Values outside [-1, 1] saturate.
    """
    if x.ndim != 4:
        raise ValueError(f"expected images shaped (B, C, H, W), got {tuple(x.shape)}")
    y = (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # the cast floors
    # Row-major strides even where C = 1 (a permuted view counts as contiguous then, but later kernels
    # pick their code path by stride), so that these images equal the same images read from files.
    return torch.empty(y.shape, dtype=y.dtype, device=y.device).copy_(y)


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
    """Atomically write an (H, W, C) uint8 image, C = 1 (grayscale), 3 (RGB) or 4 (RGBA), as PNG."""
    image = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in PNG_CHANNELS:
        raise ValueError(f"expected an (H, W, 1, 3 or 4) uint8 image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    # format="PNG" because the temporary name ends in .tmp.png only by convention; be explicit.
    atomic.write_with(path, lambda tmp: pil.save(tmp, format="PNG"))


def labelled_grid(
    cells: np.ndarray | torch.Tensor,
    row_labels: list[str],
    col_labels: list[list[str]],
    pad: int = 1,
    scale: int = 1,
) -> np.ndarray:
    """`make_grid` with a label left of every row and a header of text lines above every column.

    cells (R, K, H, W, C) uint8; row_labels: R strings (e.g. "class 3"); col_labels: K lists of lines
    (e.g. ["w=2", "seed 0"]). A header line repeated over neighbouring columns is written once, centred over
    them (so "w=2" spans its seeds). `scale` enlarges the images (nearest) so that small ones stay legible
    beside the text. Returns (height, width, C) uint8, black text on white.
    """
    from PIL import ImageDraw, ImageFont

    cells = cells.cpu().numpy() if isinstance(cells, torch.Tensor) else np.asarray(cells)
    if scale > 1:
        cells = cells.repeat(scale, axis=2).repeat(scale, axis=3)
    rows, cols, h, w, c = cells.shape
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(f"need {rows} row labels and {cols} column labels")
    grid = make_grid(cells, pad=pad)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    line_h = max([size(t)[1] for t in [*row_labels, *(x for col in col_labels for x in col)]] + [8]) + 4
    n_lines = max((len(col) for col in col_labels), default=0)
    left_w = max([size(t)[0] for t in row_labels] + [0]) + 8
    top_h = n_lines * line_h + 4
    canvas = Image.new("L", (left_w + grid.shape[1], top_h + grid.shape[0]), 255)
    canvas.paste(
        Image.fromarray(grid[:, :, 0] if c == 1 else grid[:, :, :3].mean(axis=2).astype(np.uint8)),
        (left_w, top_h),
    )
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(row_labels):
        tw, th = size(text)
        draw.text((left_w - 4 - tw, top_h + r * (h + pad) + (h - th) // 2), text, fill=0, font=font)
    _column_headers(draw, col_labels, n_lines, line_h, left_w, w + pad, pad, size, font)
    out = np.asarray(canvas, dtype=np.uint8)[:, :, None]
    if c > 1:  # keep the grid's colours: paste the RGB(A) grid back into a canvas of as many channels
        out = np.repeat(out, c, axis=2)
        if c == 4:
            out[:, :, 3] = 255  # the labels opaque
        out[top_h:, left_w:] = grid
    return out


def _column_headers(draw, col_labels, n_lines, line_h, left_w, step, pad, size, font) -> None:
    """The header lines above the columns; runs of equal text on a line (but the last) share one label,
    centred over them."""
    cols = len(col_labels)
    for line in range(n_lines):
        k = 0
        while k < cols:
            text = col_labels[k][line] if line < len(col_labels[k]) else ""
            end = k + 1
            while (
                end < cols
                and line < len(col_labels[end])
                and col_labels[end][line] == text
                and line < n_lines - 1
            ):
                end += 1
            x0, x1 = left_w + k * step, left_w + end * step - pad
            tw, _ = size(text)
            draw.text(((x0 + x1 - tw) // 2, 2 + line * line_h), text, fill=0, font=font)
            k = end
