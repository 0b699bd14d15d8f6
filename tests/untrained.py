"""Random preset networks for tests that need networks which denoise differently from each other."""

import torch

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
