"""Clipping of the denoised estimate for pixel-space models that ask for it (DeepFloyd IF).

IF's schedulers clip each x0 estimate by dynamic thresholding (Saharia et al. 2022, "Imagen", Sec. 2.3):
per sample, s = the `ratio` quantile of |x0|, clamped to [1, max_value]; x0 <- clamp(x0, -s, s) / s, or
by a static clamp to [-r, r]. At high guidance weights the extrapolated x0 leaves the data range, and
this keeps it there. `Thresholded` applies the same rule to the *guided* estimate D (the sum of all
guidance terms, as diffusers' IF pipeline applies it after combining its predictions): a denoiser that
wraps the guided one, so the one generation loop samples it like any other denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..denoiser import Denoiser, Signature, signature


@dataclass(frozen=True)
class Clip:
    """dynamic: s = clamp(quantile(|x0|, ratio), 1, max_value); static: s = max_value (no rescale)."""

    dynamic: bool
    ratio: float = 0.995
    max_value: float = 1.0

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.dynamic:
            return x0.clamp(-self.max_value, self.max_value)
        flat = x0.reshape(x0.shape[0], -1).abs().float()
        s = torch.quantile(flat, self.ratio, dim=1).clamp(1.0, self.max_value).to(x0.dtype)
        s = s.reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    def describe(self) -> dict:
        return {"dynamic": self.dynamic, "ratio": self.ratio, "max_value": self.max_value}


def clip_from_scheduler(scheduler: Any) -> Clip | None:
    """The x0 clipping a diffusers scheduler's config asks for (thresholding, else clip_sample), or None."""
    cfg = getattr(scheduler, "config", None)
    if cfg is None:
        return None
    if cfg.get("thresholding", False):
        return Clip(
            True, float(cfg.get("dynamic_thresholding_ratio", 0.995)), float(cfg.get("sample_max_value", 1.0))
        )
    if cfg.get("clip_sample", False):
        return Clip(False, max_value=float(cfg.get("clip_sample_range", 1.0)))
    return None


class Thresholded:
    """D'(x; sigma) = clip(D(x; sigma)) for any denoiser D, guided ones included. It declares what D
    declares and is evaluated as D is (`components`); a guidance interval inside D still decides per
    sampler step, from the sampler's context (`denoiser.current_step`), however D is wrapped."""

    def __init__(self, inner: Denoiser, clip: Clip):
        self.inner = inner
        self.clip = clip

    @property
    def signature(self) -> Signature:
        return signature(self.inner)

    def components(self) -> list[Any]:
        return [self.inner]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.clip(self.inner(x, sigma, cond))
