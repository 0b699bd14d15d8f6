"""autoguidance: guiding a diffusion model with a bad version of itself (Karras et al., NeurIPS 2024)."""

from .denoiser import Denoiser, denoiser_from_score, identity_denoiser, score_from_denoiser
from .errors import UserInputError
from .guidance import GuidedDenoiser, GuideTerm, autoguidance, classifier_free, interpolated, truncation
from .sampling import Churn, Trajectory, edm_sigmas, sample
from .seeds import SeedStreams, parse_seeds

__version__ = "0.1.0"

__all__ = [
    "Churn",
    "Denoiser",
    "GuideTerm",
    "GuidedDenoiser",
    "SeedStreams",
    "Trajectory",
    "UserInputError",
    "autoguidance",
    "classifier_free",
    "denoiser_from_score",
    "edm_sigmas",
    "identity_denoiser",
    "interpolated",
    "parse_seeds",
    "sample",
    "score_from_denoiser",
    "truncation",
]
