"""FD_DINOv2's detector: DINOv2 ViT-L/14 class-token features (1024-d), by EDM2's protocol.

Protocol (Karras et al. 2024, EDM2, and Stein et al. 2023): uint8 RGB images (grey replicated), scaled
to [0, 1], resized to 224x224 by bicubic interpolation with antialiasing, normalised by the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); the feature is the final layer-normalised class
token.

Why transformers' `Dinov2Model`: the reference model is distributed through torch.hub, which fetches and
runs its repository's code at load time (no offline, code-free loading), and torchvision and timm, the
other usual routes, do not work beside this project's torch build. `transformers` implements the same
architecture (patch 14, layer scale, learned position embeddings interpolated to the input size) in plain
torch and loads weights from safetensors. Its
`pooler_output` is the layer-normalised class token, the reference model's `x_norm_clstoken`.

Weights: a local directory in the Hugging Face layout (config.json + model.safetensors), e.g. a saved
copy of `facebook/dinov2-large`, or that name when it is already in the local Hugging Face hub cache.
Nothing is downloaded: a missing file is a one-line error. Only safetensors are read (never pickles).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.nn import functional as F

from ...errors import UserInputError
from ...io.cache import file_sha256
from .base import Detector, to_rgb_float

RESOLUTION = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = "facebook/dinov2-large"  # ViT-L/14: hidden size 1024, 24 layers, patch 14
ENV_VAR = "AUTOGUIDANCE_DINOV2_WEIGHTS"
HINT = (
    "pass --dinov2-weights DIR (a Hugging Face directory with config.json and model.safetensors, e.g. "
    "facebook/dinov2-large saved with save_pretrained) or have facebook/dinov2-large in the local "
    "Hugging Face cache; nothing is downloaded"
)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, 3, 224, 224) float32: [0, 1], bicubic antialiased resize, ImageNet norm."""
    x = to_rgb_float(images) / 255.0
    if x.shape[2:] != (RESOLUTION, RESOLUTION):
        x = F.interpolate(
            x, size=(RESOLUTION, RESOLUTION), mode="bicubic", align_corners=False, antialias=True
        )
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _load_model(source: str):
    try:
        from transformers import Dinov2Model
    except ImportError:
        raise UserInputError(
            "the dinov2 detector needs transformers: pip install 'autoguidance[metrics]'"
        ) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar, not one per weight file
    try:
        # local_files_only: never reach the network; use_safetensors: never unpickle a .bin file.
        return Dinov2Model.from_pretrained(source, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"cannot load DINOv2 weights from {source!r}: {first}; {HINT}") from None


class DINOv2Detector(Detector):
    """Class-token features of a transformers `Dinov2Model` (ViT-L/14 for FD_DINOv2)."""

    name = "dinov2"

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        source = str(weights) if weights is not None else os.environ.get(ENV_VAR, DEFAULT_MODEL)
        path = Path(source).expanduser()
        if weights is not None and not path.exists():
            raise UserInputError(f"DINOv2 weights {source!r} do not exist: {HINT}")
        self.source = str(path) if path.exists() else source
        self.model = _load_model(self.source).eval()
        self.device = torch.device(device)
        self.model.to(self.device)
        cfg = self.model.config
        self.feature_dim = int(cfg.hidden_size)
        self.is_vitl14 = (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size) == (1024, 24, 14)
        weights_file = path / "model.safetensors" if path.is_dir() else None
        self.digest = file_sha256(weights_file) if weights_file and weights_file.is_file() else None

    @property
    def version(self) -> str:
        cfg = self.model.config
        arch = (
            "vitl14"
            if self.is_vitl14
            else f"custom-d{cfg.hidden_size}-l{cfg.num_hidden_layers}-p{cfg.patch_size}"
        )
        ident = self.digest[:16] if self.digest else self.source
        return f"dinov2-{arch}/bicubic-aa-224/{ident}"

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=preprocess(images)).pooler_output
