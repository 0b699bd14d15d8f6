"""Feature detectors for Frechet distances and precision/recall, each a named, versioned choice.

- `inception`: FID's Inception-v3 (TorchScript file), 2048-d.
- `dinov2`: FD_DINOv2's ViT-L/14 through transformers (local weights), 1024-d.
- `classifier`: a small CNN trained here on a built-in dataset (digits, mnist), 128-d.
"""

from __future__ import annotations

import os

import torch

from ...errors import UserInputError
from .base import Detector

DETECTOR_NAMES = ("inception", "dinov2", "classifier")


def make_detector(
    name: str,
    *,
    inception_weights: str | os.PathLike | None = None,
    dinov2_weights: str | os.PathLike | None = None,
    dataset: str | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """The detector called `name`; weights from the given path or the documented default locations.

    dataset: for 'classifier', the built-in dataset whose training split it learns ('digits', 'mnist').
    """
    if name == "inception":
        from .inception import InceptionDetector

        return InceptionDetector(inception_weights, device=device)
    if name == "dinov2":
        from .dinov2 import DINOv2Detector

        return DINOv2Detector(dinov2_weights, device=device)
    if name == "classifier":
        from .classifier import ClassifierDetector

        return ClassifierDetector.for_dataset(dataset, device=device)
    raise UserInputError(f"unknown detector {name!r}: choose one of {', '.join(DETECTOR_NAMES)}")


__all__ = ["DETECTOR_NAMES", "Detector", "make_detector"]
