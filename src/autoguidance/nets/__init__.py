"""EDM2 image networks: magnitude-preserving layers (mp), the UNet (unet), EDM preconditioning and its
config (precond), size presets (presets) and cost counting (flops)."""

from .flops import count_parameters, flops_per_evaluation
from .precond import EDM2Denoiser, NetConfig, build
from .presets import PRESET_NAMES, preset_config
from .unet import UNet

__all__ = [
    "PRESET_NAMES",
    "EDM2Denoiser",
    "NetConfig",
    "UNet",
    "build",
    "count_parameters",
    "flops_per_evaluation",
    "preset_config",
]
