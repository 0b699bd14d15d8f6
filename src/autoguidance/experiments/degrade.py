"""Deliberately degraded denoisers (autoguidance paper, Sec. 4): a main model degraded a little, guided by
the same model degraded more, by the same kind of degradation (matched) or another (mismatched).

Both degradations are deterministic and per sample, so that common random numbers and batch independence
hold as for any other configuration:

- dropout: each MP layer's input channels are dropped with probability p by a mask drawn once per layer
  from a fixed seed (frozen dropout, rescaled by 1 / (1 - p) as dropout is); the same for every sample.
- input noise: the network sees x + sigma sqrt(f^2 - 1) n and is told the noise level f sigma, i.e. an
  image whose noise is raised by the factor f = 1 + `noise` (noise 0.1: 10% more), the extra noise n
  drawn from a generator seeded by a hash of that sample's x, so a sample's result does not depend on
  its batch.
"""

from __future__ import annotations

import copy
import hashlib
import math

import torch
from torch import nn

from ..denoiser import Denoiser, expand_sigma
from ..nets.mp import MPConv

DROPOUT_SEED = 20240607


def with_frozen_dropout(net: nn.Module, p: float, seed: int = DROPOUT_SEED) -> nn.Module:
    """A copy of `net` whose MP layers (all but the first, which sees the image) drop input channels."""
    if p <= 0:
        return net
    out = copy.deepcopy(net)
    layers = [m for m in out.modules() if isinstance(m, MPConv)]
    for index, layer in enumerate(layers[1:], start=1):
        g = torch.Generator().manual_seed(seed + index)
        keep = (torch.rand(layer.weight.shape[1], generator=g) >= p).to(torch.float32) / (1 - p)

        def hook(module, args, keep=keep):
            x = args[0]
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return (x * keep.to(x.device, x.dtype).reshape(shape), *args[1:])

        layer.register_forward_pre_hook(hook)
    return out


def _hashed_normal(x: torch.Tensor) -> torch.Tensor:
    """Unit Gaussian noise like x, each sample's drawn from a generator seeded by a hash of its values."""
    out = torch.empty_like(x, dtype=torch.float32, device="cpu")
    for i, sample in enumerate(x.detach().to("cpu", torch.float32)):
        seed = int.from_bytes(hashlib.blake2b(sample.numpy().tobytes(), digest_size=8).digest(), "little")
        out[i] = torch.randn(sample.shape, generator=torch.Generator().manual_seed(seed >> 1))
    return out.to(x.device, x.dtype)


def with_input_noise(denoiser: Denoiser, noise: float) -> Denoiser:
    """D'(x; sigma) = D(x + sigma sqrt(f^2 - 1) n; f sigma), f = 1 + noise: the denoiser of a noisier x."""
    if noise <= 0:
        return denoiser
    factor = 1.0 + noise
    k = math.sqrt(factor**2 - 1)

    def noisy(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        s = expand_sigma(sigma, x)
        return denoiser(x + k * s * _hashed_normal(x), s.flatten() * factor, cond)

    return noisy
