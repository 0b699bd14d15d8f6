"""An in-memory image dataset: float32 images in [-1, 1] with optional integer class labels.

The datasets this project trains on are small (thousands of images up to 64x64), so everything lives in
one tensor; a training batch is then a single index operation, with no loader workers to seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class ImageDataset:
    """Images (N, C, H, W) float32 in [-1, 1]; labels (N,) int64 in [0, num_classes) or None.

    `num_classes` is 0 for an unlabelled dataset. `name` says where the data came from (e.g. 'digits:train'),
    for logs and result records.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        # Checked once here so that training, sampling and metrics can trust the shapes and ranges.
        if self.images.ndim != 4 or self.images.dtype != torch.float32:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be a float32 tensor (N, C, H, W), got {self.images.dtype} {shape}")
        if self.labels is None:
            if self.num_classes != 0:
                raise ValueError(f"an unlabelled dataset has num_classes 0, got {self.num_classes}")
            return
        if self.labels.shape != (len(self.images),) or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be an int64 tensor ({len(self.images)},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.num_classes < 1:
            raise ValueError(f"a labelled dataset needs num_classes >= 1, got {self.num_classes}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | None]:
        """One image (C, H, W) and its label (None when unlabelled)."""
        label = None if self.labels is None else int(self.labels[index])
        return self.images[index], label

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        """Side length in pixels; images are square (H == W) in every dataset we build."""
        return self.images.shape[2]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image: (C, H, W)."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, C, H, W) and labels (B,) or None at `indices` (B,) int64."""
        labels = None if self.labels is None else self.labels[indices]
        return self.images[indices], labels

    def subset(self, indices: torch.Tensor, name: str | None = None) -> ImageDataset:
        """A new dataset holding the rows at `indices` (K,), in that order; classes keep their numbers."""
        labels = None if self.labels is None else self.labels[indices]
        return ImageDataset(self.images[indices], labels, self.num_classes, name or self.name)

    def padded(self, resolution: int, value: float = -1.0) -> ImageDataset:
        """The images centred in a `resolution`-sided square filled with `value` (-1: black), e.g. 28x28
        digits in 32x32 as the networks need a side that halves down to 4 or 8; self if already that size.
        """
        size = self.resolution
        if resolution == size:
            return self
        if resolution < size:
            raise ValueError(f"cannot pad {size}x{size} images to a smaller {resolution}x{resolution}")
        before = (resolution - size) // 2
        after = resolution - size - before
        images = F.pad(self.images, (before, after, before, after), value=value)
        return ImageDataset(images, self.labels, self.num_classes, self.name)
