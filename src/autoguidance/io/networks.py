"""Network files in and out: our checkpoints (safetensors weights + JSON metadata, no pickle) and EDM2's
pickles, told apart by content (a pickle starts with its protocol byte 0x80, safetensors with an 8-byte
header length). A pickle is read only through the restricted unpickler (`io.restricted_pickle`).

Metadata of ours: {"kind": "edm2_denoiser", "net": NetConfig.to_dict(), ...free-form provenance such as
"dataset", "training_time", "sigma_rel", "step"}. Loading validates the config, the tensor names and
shapes against a freshly built network, and reports any mismatch as a one-line UserInputError.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..nets.precond import EDM2Denoiser, NetConfig, build
from . import checkpoint
from .edm2 import checkpoint_metadata, load_edm2_pickle

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


def _load_checkpoint(path: str | os.PathLike, device: str | torch.device) -> tuple[EDM2Denoiser, dict]:
    """Rebuild the network from its stored config and load its weights (eval mode)."""
    tensors, meta = checkpoint.load(path, kind=KIND)
    config = NetConfig.from_dict(meta.get("net"))
    net = build(config)
    checkpoint.load_into(net, tensors, f"checkpoint {path}")
    return net.to(device).eval(), meta


def is_pickle(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"
    except OSError:
        return False  # the checkpoint loader names the problem (missing file, unreadable)


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[EDM2Denoiser, dict]:
    """(network in eval mode on `device`, metadata) from a .safetensors checkpoint of ours or an EDM2
    pickle (read by the restricted unpickler: nothing in it runs)."""
    if not is_pickle(path):
        return _load_checkpoint(path, device=device)
    ckpt = load_edm2_pickle(str(path))
    meta = {"kind": "edm2_pickle", "net": ckpt.net.config.to_dict(), **checkpoint_metadata(ckpt)}
    return ckpt.net.to(device), meta
