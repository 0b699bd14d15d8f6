"""Magnitude-preserving primitives of EDM2 ("config G", Karras et al. 2024, Sec. 3 and App. B).

Every op keeps unit expected magnitude (RMS 1 per element) when its inputs have it, which is what lets
EDM2 drop normalisation layers, biases and weight decay. Shared by the toy MLP and the image UNet.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# E[silu(x)^2]^(1/2) for x ~ N(0, 1): dividing by it keeps unit magnitude (EDM2 eq. 81).
SILU_MAGNITUDE = 0.596


def normalize(w: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Scale each output row of `w` to RMS 1: w_i / (eps + ||w_i|| / sqrt(fan_in)) (EDM2 eq. 66)."""
    dims = list(range(1, w.ndim))
    fan_in = w[0].numel()
    norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True, dtype=torch.float32)
    return w / (eps + norm / math.sqrt(fan_in)).to(w.dtype)


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-4) -> torch.Tensor:
    """Scale `x` to RMS 1 along `dim` only: x / (eps + ||x||_dim / sqrt(n)) (EDM2 eq. 66 on activations).

    Used as the encoder's pixel norm (dim = channels) and on attention q, k, v (dim = head channels).
    """
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    return x / (eps + norm / math.sqrt(x.shape[dim])).to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """MP-SiLU: silu(x) / 0.596 (EDM2 eq. 81)."""
    return F.silu(x) / SILU_MAGNITUDE


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """MP-sum: ((1 - t) a + t b) / sqrt((1 - t)^2 + t^2) (EDM2 eq. 88); t is b's share."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """MP-concatenation (EDM2 eq. 103): each part weighted by (1 - t) and t, total magnitude kept."""
    na, nb = a.shape[dim], b.shape[dim]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    return torch.cat([a * (c / math.sqrt(na) * (1 - t)), b * (c / math.sqrt(nb) * t)], dim=dim)


class MPFourier(nn.Module):
    """MP Fourier features: sqrt(2) cos(2 pi (f c + phi)), f ~ N(0, 1), phi ~ U(0, 1), both fixed.

    The factor sqrt(2) gives unit RMS because cos of a uniform phase has mean square 1/2.
    """

    def __init__(self, num_channels: int, bandwidth: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels, generator=g) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels, generator=g))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        y = c.to(torch.float32).reshape(-1, 1) * self.freqs + self.phases
        return (y.cos() * math.sqrt(2)).to(c.dtype if c.is_floating_point() else torch.float32)


class MPConv(nn.Module):
    """A magnitude-preserving linear layer (kernel=()) or convolution (kernel=(k, k)), no bias.

    Forced weight normalisation (EDM2 Sec. 3.3): in training the stored weight is overwritten by
    normalize(weight) before use, so its rows stay at RMS 1 and the effective learning rate decays
    only through the schedule; the layer then applies normalize(weight) * gain / sqrt(fan_in).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...] = ()):
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        w = self.weight.to(torch.float32)
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w) * (gain / math.sqrt(w[0].numel()))
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)
