"""Saving and loading trained EDM2 denoisers: safetensors weights + JSON metadata, no pickle.

Metadata: {"kind": "edm2_denoiser", "net": NetConfig.to_dict(), ...free-form provenance such as
"dataset", "training_time", "sigma_rel", "step"}. Loading validates the config, the tensor names and
shapes against a freshly built network, and reports any mismatch as a one-line UserInputError.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import UserInputError
from ..nets.precond import EDM2Denoiser, NetConfig, build
from . import checkpoint

KIND = "edm2_denoiser"


def save_network(
    path: str | os.PathLike,
    net: EDM2Denoiser,
    metadata: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically save `net` (or `tensors`, e.g. EMA or post-hoc weights, in its layout) with metadata."""
    state = tensors if tensors is not None else net.state_dict()
    checkpoint.save(path, dict(state), {**(metadata or {}), "kind": KIND, "net": net.config.to_dict()})


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[EDM2Denoiser, dict]:
    """Rebuild the network from its stored config and load its weights (eval mode)."""
    tensors, meta = checkpoint.load(path, kind=KIND)
    config = NetConfig.from_dict(meta.get("net"))
    net = build(config)
    checkpoint.load_into(net, tensors, f"checkpoint {path}")
    return net.to(device).eval(), meta


def check_compatible(main: NetConfig, guide: NetConfig, guide_name: str = "guide") -> None:
    """A guide must denoise the same images with the same conditioning as the main model."""
    if (guide.img_resolution, guide.img_channels) != (main.img_resolution, main.img_channels):
        raise UserInputError(
            f"{guide_name} works on {guide.img_channels}x{guide.img_resolution}x{guide.img_resolution} "
            f"images, the main model on {main.img_channels}x{main.img_resolution}x{main.img_resolution}"
        )
    if guide.label_dim not in (main.label_dim, 0):
        raise UserInputError(f"{guide_name} has {guide.label_dim} classes, the main model {main.label_dim}")
