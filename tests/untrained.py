"""Random networks for tests: preset denoisers that denoise differently from each other, and a tiny VAE."""

from pathlib import Path

import torch

from autoguidance.io.networks import save_network
from autoguidance.nets.precond import EDM2Denoiser, build
from autoguidance.nets.presets import preset_config


def untrained(name: str, resolution: int = 8, label_dim: int = 10) -> EDM2Denoiser:
    """A fresh preset net whose zero-initialised gains are set to 1.

    At initialisation the output gain is 0, so every net is D = c_skip x and guidance would be a no-op;
    with the gains at 1 the random UNet shows through and different nets denoise differently.
    """
    net = build(preset_config(name, resolution, 1, label_dim))
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 0:
                p.fill_(1.0)
    return net.eval()


def save_untrained(folder: Path, specs: dict[str, tuple[str, int, int]], **metadata) -> dict[str, Path]:
    """Save `untrained(preset, resolution, labels)` for each name of `specs` as folder/NAME.safetensors
    (metadata: `metadata` plus the preset); the paths by name."""
    paths = {}
    for key, (name, res, labels) in specs.items():
        paths[key] = folder / f"{key}.safetensors"
        save_network(paths[key], untrained(name, res, labels), {**metadata, "preset": name})
    return paths


def tiny_vae(seed: int, latent_channels: int = 4, **config):
    """A tiny random diffusers AutoencoderKL (RGB, 2x down-sampling), for latent paths; `config` sets
    other AutoencoderKL fields (e.g. scaling_factor, shift_factor)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
        **config,
    ).eval()
