"""The denoiser convention every part of autoguidance shares (EDM, Karras et al. 2022).

A denoiser is any callable ``D(x, sigma, cond=None) -> x0_hat`` that estimates E[y | x] for
x = y + n, n ~ N(0, sigma^2 I). ``x`` has shape (B, ...), ``sigma`` shape (B,) (one noise level per
sample), ``cond`` is None or a (B,) tensor of class labels. Its score is (D - x) / sigma^2.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Denoiser(Protocol):
    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def expand_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Return sigma as a (B, 1, ..., 1) tensor that broadcasts against x of shape (B, ...)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def score_from_denoiser(d: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x; sigma) = (D(x; sigma) - x) / sigma^2 (EDM eq. 3)."""
    return (d - x) / expand_sigma(sigma, x) ** 2


def denoiser_from_score(score: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """D(x; sigma) = x + sigma^2 * score (Tweedie's formula)."""
    return x + expand_sigma(sigma, x) ** 2 * score


def identity_denoiser(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """D(x) = x: the zero score. As a guide it turns guidance into naive score scaling (truncation)."""
    return x


def without_condition(denoiser: Denoiser) -> Denoiser:
    """The unconditional view of a denoiser: it is called with cond=None whatever the caller passes."""

    def unconditional(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return denoiser(x, sigma, None)

    return unconditional
