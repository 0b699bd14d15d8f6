"""The EDM2 denoising loss with learned uncertainty weighting (Karras et al. 2024, Sec. 5 and eq. 8).

Pure functions: the randomness (noise images and the standard-normal draws behind ln sigma) comes in as
arguments, drawn by `noise.py` from per-sample generators, so that the loss of a sample does not depend on
the batch it is in or on the number of processes.
"""

from __future__ import annotations

import torch
from torch import nn


def sigma_from_normal(normal: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """Noise levels sigma (B,) from standard normals (B,): ln sigma ~ N(P_mean, P_std^2) (EDM Table 1)."""
    return (normal * p_std + p_mean).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (EDM Table 1): unit effective weight at every sigma,
    the inverse of c_out^2, so the network's output F sees a target of unit variance."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def per_element_loss(
    denoised: torch.Tensor, clean: torch.Tensor, logvar: torch.Tensor, sigma: torch.Tensor, sigma_data: float
) -> torch.Tensor:
    """lambda(sigma) / e^u ||D - y||^2 + u per element (EDM2 eq. 8), shape (B, C, H, W).

    denoised D and clean y: (B, C, H, W); logvar u(sigma): (B, 1, 1, 1); sigma: (B,). The learned u makes
    the weighting adapt so that every noise level contributes about equally (u tracks the log of the
    expected weighted error at that sigma).
    """
    weight = loss_weight(sigma, sigma_data).reshape(-1, *([1] * (clean.ndim - 1)))
    return weight / logvar.exp() * (denoised - clean).square() + logvar


def denoising_loss(
    net: nn.Module,
    clean: torch.Tensor,
    labels: torch.Tensor | None,
    noise: torch.Tensor,
    normal: torch.Tensor,
    p_mean: float,
    p_std: float,
    sigma_data: float,
) -> torch.Tensor:
    """Mean of the EDM2 per-element loss over a batch: a scalar.

    net: an EDM2Denoiser (or a DDP wrapper of one) called as net(x, sigma, cond, return_logvar=True).
    clean y (B, C, H, W) in [-1, 1]; labels (B,) or None; noise n (B, C, H, W) ~ N(0, I); normal (B,)
    ~ N(0, 1). x = y + sigma n (EDM eq. 2 with n scaled by sigma). Averaging over the B samples (not
    summing) makes the gradient of a rank's share, averaged across equal shares by DDP, equal to the
    gradient of the whole global batch in one process.
    """
    sigma = sigma_from_normal(normal, p_mean, p_std).to(clean.dtype)
    x = clean + sigma.reshape(-1, *([1] * (clean.ndim - 1))) * noise
    denoised, logvar = net(x, sigma, labels, return_logvar=True)
    return per_element_loss(denoised, clean, logvar, sigma, sigma_data).mean()
