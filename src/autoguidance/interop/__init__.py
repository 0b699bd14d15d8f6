"""Other people's models as denoisers (they enter the data flow at "denoiser", never deeper).

  edm2_pickle / edm2_convert   EDM2's released pickles, read by a restricted unpickler (no code runs),
                               rebuilt as the package's own network
  edm2_presets                 EDM2's published autoguidance configurations, downloaded and cached
  parameterization             eps / v / flow / x0 models as EDM denoisers, sigma <-> timestep maps
  diffusers_adapter, latents   diffusers models and pipelines; VAE latents (EDM2's normalisation)
  weak_guides, precision       guides derived from the main model without training; fp16 / bf16
  sample_any, diffusers_generate  seeded sampling of any denoiser; the generate-diffusers command's core

diffusers is an optional extra (`pip install 'autoguidance[diffusers]'`), imported only where needed.
"""

from .edm2_convert import EDM2Checkpoint, load_edm2_pickle
from .edm2_presets import EDM2_PRESETS, resolve_preset
from .loading import load_any_network
from .parameterization import CosineVP, DiscreteVP, LinearVP, PredictionDenoiser, RectifiedFlow
from .precision import LowPrecision
from .sample_any import sample_from_seeds
from .weak_guides import DropoutGuide, InputNoiseGuide, QuantizedGuide, SkipBlocksGuide, weak_guide

__all__ = [
    "EDM2_PRESETS",
    "CosineVP",
    "DiscreteVP",
    "DropoutGuide",
    "EDM2Checkpoint",
    "InputNoiseGuide",
    "LinearVP",
    "LowPrecision",
    "PredictionDenoiser",
    "QuantizedGuide",
    "RectifiedFlow",
    "SkipBlocksGuide",
    "load_any_network",
    "load_edm2_pickle",
    "resolve_preset",
    "sample_from_seeds",
    "weak_guide",
]
