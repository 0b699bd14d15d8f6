"""One entry point for network files: our safetensors checkpoints and EDM2's pickles, by content.

EDM2 pickles start with a pickle protocol byte (0x80); safetensors files with an 8-byte header length.
A pickle is read only through the restricted unpickler (`edm2_pickle`), never by `pickle.load`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from ..errors import UserInputError
from ..nets.precond import EDM2Denoiser
from .edm2 import EDM2Encoder, checkpoint_metadata, load_edm2_pickle
from .networks import load_network


def is_pickle(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"
    except OSError:
        return False  # the checkpoint loader names the problem (missing file, unreadable)


def load_any_network(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[EDM2Denoiser, dict]:
    """(network in eval mode on `device`, metadata) from a .safetensors checkpoint or an EDM2 pickle."""
    if not is_pickle(path):
        return load_network(path, device=device)
    ckpt = load_edm2_pickle(str(path))
    meta = {"kind": "edm2_pickle", "net": ckpt.net.config.to_dict(), **checkpoint_metadata(ckpt)}
    return ckpt.net.to(device), meta


def edm2_decoder(
    meta: dict, vae: str | None = None, device: str | torch.device = "cpu"
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For an EDM2 latent network (its pickle records a Stability VAE encoder): latents -> uint8 images
    through diffusers' AutoencoderKL (`vae`: a local folder or hub name; default the recorded one).
    None for pixel-space networks. Needs the `diffusers` extra."""
    enc = meta.get("encoder") if isinstance(meta, dict) else None
    if vae is None and (not enc or enc.get("kind") != "vae"):
        return None
    kwargs = {k: v for k, v in (enc or {}).items() if k != "kind"}
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise UserInputError(
            "decoding latents needs diffusers: pip install 'autoguidance[diffusers]'"
        ) from None
    from ..wrappers.latents import EDM2_VAE_NAME, LatentCodec

    name = vae or kwargs.get("vae_name") or EDM2_VAE_NAME
    try:
        model = AutoencoderKL.from_pretrained(name).to(device).eval()
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot load the VAE {name!r}: {str(exc).splitlines()[0]}") from None
    norm = {k: kwargs[k] for k in ("raw_mean", "raw_std", "final_mean", "final_std") if k in kwargs}
    return LatentCodec.edm2(model, **norm).decode


__all__ = ["EDM2Encoder", "edm2_decoder", "is_pickle", "load_any_network"]
