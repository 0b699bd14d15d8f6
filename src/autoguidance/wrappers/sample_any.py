"""Sample any denoiser (a wrapped diffusers model, an EDM2 network, a guided combination) from seeds.

The same rules as `generation.generate_images`: each sample's initial noise comes from its own seeded
generator (`SeedStreams`), so an image depends on its seed only, not on the batch. Conditioning is
sliced per batch when it is a tensor (or a dict of tensors) with one row per seed; a dict of tensors
with one row is shared by every sample (e.g. one prompt's embedding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..denoiser import Denoiser
from ..errors import UserInputError
from ..images import to_uint8
from ..sampling import edm_sigmas, sample
from ..seeds import SeedStreams
from .latents import LatentCodec


def _slice(cond: Any, start: int, stop: int, total: int) -> Any:
    if cond is None:
        return None
    if torch.is_tensor(cond):
        if cond.shape[0] != total:
            raise UserInputError(f"conditioning has {cond.shape[0]} rows for {total} seeds")
        return cond[start:stop]
    if isinstance(cond, dict):
        n = stop - start
        return {
            k: (v[start:stop] if v.shape[0] == total else v.expand(n, *v.shape[1:]))
            if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] in (total, 1)
            else v
            for k, v in cond.items()
        }
    raise UserInputError(f"conditioning must be None, a tensor or a dict, got {type(cond).__name__}")


@torch.no_grad()
def sample_from_seeds(
    denoiser: Denoiser,
    shape: Sequence[int],
    seeds: Sequence[int],
    *,
    cond: Any = None,
    num_steps: int = 32,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    codec: LatentCodec | None = None,
) -> torch.Tensor:
    """Heun samples (N, *shape) float32 on the CPU, or uint8 images (N, H, W, 3) through `codec`.

    Pixel-space samples in [-1, 1] are returned as they are; `images.to_uint8` turns them into images.
    sigma_min / sigma_max default to the wrapped model's schedule range (a `PredictionDenoiser`'s, the
    upper end capped at EDM's 80), else to EDM's 0.002 and 80.
    """
    seeds = [int(s) for s in seeds]
    schedule = getattr(getattr(denoiser, "main", denoiser), "schedule", None)
    if sigma_min is None:
        sigma_min = schedule.sigma_min if schedule is not None else 0.002
    if sigma_max is None:
        sigma_max = min(schedule.sigma_max, 80.0) if schedule is not None else 80.0
    sigmas = edm_sigmas(num_steps, sigma_min, sigma_max, rho)
    out = []
    for start in range(0, len(seeds), batch_size):
        stop = min(start + batch_size, len(seeds))
        streams = SeedStreams(seeds[start:stop])
        latents = streams.randn(tuple(shape), device=device)
        x = sample(denoiser, latents, sigmas, _slice(cond, start, stop, len(seeds)), solver="heun")
        out.append(codec.decode(x) if codec is not None else x.cpu())
    return torch.cat(out)


def pixels_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] samples (N, C, H, W) -> uint8 (N, H, W, C)."""
    return to_uint8(x)
