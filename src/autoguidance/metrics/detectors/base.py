"""What every feature detector offers: uint8 images in, one float feature vector per image out.

Images enter as (N, H, W, C) uint8 tensors with C = 1 (grey) or 3 (RGB), the layout of
`autoguidance.images` and of image files; each detector does its own protocol's resizing and scaling, so
that a caller never has to know it. A detector has a `name` (which metric it feeds, e.g. 'inception' for
FID) and a `version` string that changes whenever its features could change (network file digest,
preprocessing); both are recorded with every result and every cached reference statistic.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from ...errors import UserInputError


class Detector(ABC):
    """A named, versioned map from uint8 images (N, H, W, C) to features (N, feature_dim) float32."""

    name: str
    feature_dim: int

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies the exact features: changes when the weights or the preprocessing change."""

    @abstractmethod
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """images: checked (N, H, W, C) uint8 on the detector's device."""

    def describe(self) -> dict:
        """Plain data for result records."""
        return {"name": self.name, "version": self.version, "feature_dim": self.feature_dim}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) uint8 -> (N, feature_dim) float32 on the CPU."""
        check_uint8_images(images)
        if len(images) == 0:
            return torch.zeros((0, self.feature_dim), dtype=torch.float32)
        return self._features(images.to(self.device)).float().cpu()

    device: torch.device = torch.device("cpu")


def check_uint8_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) uint8 images, got {getattr(images, 'dtype', type(images))}")
    if images.shape[3] not in (1, 3):
        raise ValueError(f"expected 1 (grey) or 3 (RGB) channels last, got shape {tuple(images.shape)}")


def to_rgb_float(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, 3, H, W) float32 in 0..255, grey replicated to three channels."""
    x = images.permute(0, 3, 1, 2).float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def existing_file(path: str | os.PathLike | None, what: str, hint: str) -> Path:
    """`path` as a Path if it is a readable file; else a one-line UserInputError saying how to get one."""
    if path is None:
        raise UserInputError(f"{what} weights are needed: {hint}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserInputError(f"{what} weights file {str(p)!r} does not exist: {hint}")
    return p
