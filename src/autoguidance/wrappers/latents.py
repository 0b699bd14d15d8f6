"""Latent diffusion: a VAE (diffusers' AutoencoderKL) between pixels and the denoiser's latents.

The denoiser works on normalised latents z = raw * scale + bias, per channel. EDM2's ImageNet-512
models (Karras et al. 2024, App. ...; the Stability VAE "stabilityai/sd-vae-ft-mse", 8x downsampling,
4 channels) normalise the VAE's raw latent mean per channel to mean 0 and standard deviation 0.5:
scale = 0.5 / raw_std, bias = -raw_mean * scale, with raw_mean = (5.81, 3.25, 0.12, -2.15) and
raw_std = (4.17, 4.62, 3.71, 3.28) measured on ImageNet. Stable Diffusion-style pipelines use one
scalar instead: z = (raw - shift_factor) * scaling_factor (the VAE config's fields).
Pixels are uint8 RGB; the VAE sees them in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import UserInputError

EDM2_VAE_NAME = "stabilityai/sd-vae-ft-mse"
EDM2_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)
EDM2_RAW_STD = (4.17, 4.62, 3.71, 3.28)
EDM2_FINAL_MEAN = 0.0
EDM2_FINAL_STD = 0.5


class LatentCodec:
    """Pixels <-> normalised latents through `vae` (a diffusers AutoencoderKL or anything with its
    encode(x).latent_dist.mean / decode(z).sample interface)."""

    def __init__(self, vae: torch.nn.Module, scale: Sequence[float] | float, bias: Sequence[float] | float):
        self.vae = vae
        self.scale = torch.as_tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.bias = torch.as_tensor(bias, dtype=torch.float32).reshape(1, -1, 1, 1)

    @classmethod
    def edm2(
        cls,
        vae: torch.nn.Module,
        raw_mean: Sequence[float] = EDM2_RAW_MEAN,
        raw_std: Sequence[float] = EDM2_RAW_STD,
        final_mean: float = EDM2_FINAL_MEAN,
        final_std: float = EDM2_FINAL_STD,
    ) -> LatentCodec:
        """EDM2's per-channel normalisation (module docstring)."""
        mean = torch.as_tensor(raw_mean, dtype=torch.float32)
        std = torch.as_tensor(raw_std, dtype=torch.float32)
        if mean.shape != std.shape or not bool((std > 0).all()):
            raise UserInputError("raw_mean and raw_std must have one positive std per latent channel")
        scale = final_std / std
        return cls(vae, scale, final_mean - mean * scale)

    @classmethod
    def from_vae_config(cls, vae: torch.nn.Module) -> LatentCodec:
        """Stable Diffusion style: z = (raw - shift_factor) * scaling_factor, from the VAE's config."""
        cfg = getattr(vae, "config", None)
        scaling = float(getattr(cfg, "scaling_factor", None) or 1.0)
        shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        return cls(vae, scaling, -shift * scaling)

    def _param(self) -> torch.Tensor:
        return next(self.vae.parameters())

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised latents (N, C, H/f, W/f) float32 (the posterior mean)."""
        p = self._param()
        x = images.permute(0, 3, 1, 2).to(device=p.device, dtype=torch.float32) / 127.5 - 1
        raw = self.vae.encode(x.to(p.dtype)).latent_dist.mean.to(torch.float32)
        return raw * self.scale.to(raw.device) + self.bias.to(raw.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (N, C, h, w) -> uint8 images (N, H, W, 3) on the CPU."""
        p = self._param()
        z = latents.to(device=p.device, dtype=torch.float32)
        raw = (z - self.bias.to(z.device)) / self.scale.to(z.device)
        x = self.vae.decode(raw.to(p.dtype)).sample.to(torch.float32)
        x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu()


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
