"""autoguidance: guiding a diffusion model with a bad version of itself (Karras et al., NeurIPS 2024).

The public API, in the order data flows through it:

- denoisers: `Denoiser` (D(x, sigma, cond) -> x0_hat), `load_network` (our checkpoints or EDM2's pickles),
  wrappers for other people's models (`PredictionDenoiser` with `DiscreteVP`, `LinearVP`, `CosineVP`,
  `RectifiedFlow`; `from_pipeline` for diffusers; `LowPrecision`), training-free guides (`weak_guide`,
  `DropoutGuide`, `InputNoiseGuide`, `SkipBlocksGuide`, `QuantizedGuide`, `AttentionTemperatureGuide`);
- guidance: `guided` (the one builder: autoguidance, CFG, both, interval), `GuidedDenoiser`, `GuideTerm`,
  `autoguidance`, `classifier_free`, `interpolated`, `truncation`;
- sampling: `sample`, `edm_sigmas`, `SamplerSettings`, `Churn`, `SeedStreams`;
- generation: `generate_images`, `generate_batches` (seeded, batch-independent, pixels or latents).
"""

from .denoiser import Denoiser, Signature, denoiser_from_score, identity_denoiser, score_from_denoiser
from .errors import UserInputError
from .generate import generate_batches, generate_images
from .guidance import (
    GuidedDenoiser,
    GuideTerm,
    autoguidance,
    classifier_free,
    guided,
    interpolated,
    truncation,
)
from .guides import (
    AttentionTemperatureGuide,
    DropoutGuide,
    InputNoiseGuide,
    QuantizedGuide,
    SkipBlocksGuide,
    weak_guide,
)
from .io.networks import load_network, save_network
from .sampling import Churn, SamplerSettings, Trajectory, edm_sigmas, sample
from .seeds import SeedStreams, parse_seeds
from .wrappers.diffusers import from_pipeline
from .wrappers.parameterization import CosineVP, DiscreteVP, LinearVP, PredictionDenoiser, RectifiedFlow
from .wrappers.precision import LowPrecision

__version__ = "0.1.0"

__all__ = [
    "AttentionTemperatureGuide",
    "Churn",
    "CosineVP",
    "Denoiser",
    "DiscreteVP",
    "DropoutGuide",
    "GuideTerm",
    "GuidedDenoiser",
    "InputNoiseGuide",
    "LinearVP",
    "LowPrecision",
    "PredictionDenoiser",
    "QuantizedGuide",
    "RectifiedFlow",
    "SamplerSettings",
    "SeedStreams",
    "Signature",
    "SkipBlocksGuide",
    "Trajectory",
    "UserInputError",
    "autoguidance",
    "classifier_free",
    "denoiser_from_score",
    "edm_sigmas",
    "from_pipeline",
    "generate_batches",
    "generate_images",
    "guided",
    "identity_denoiser",
    "interpolated",
    "load_network",
    "parse_seeds",
    "sample",
    "save_network",
    "score_from_denoiser",
    "truncation",
    "weak_guide",
]
