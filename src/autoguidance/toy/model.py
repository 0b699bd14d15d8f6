"""The paper's toy model (App. C.1): an MP-MLP that outputs a scalar log-density; score by autograd.

Input (x / sqrt(sigma_data^2 + sigma^2), log(sigma) / 4, 1) -> MP linear to `width` -> `depth` times
(MP-SiLU, MP linear). Output log p(x; sigma) = gain * mean(y^2) / sigma - |x_in|^2 / 2: the second term is
the Gaussian N(0, sigma_data^2 + sigma^2) that the net refines, the learned gain starts at 0 so the
untrained model is exactly that Gaussian.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import UserInputError
from ..nets.mp import MPConv, mp_silu


@dataclass(frozen=True)
class ToyModelConfig:
    width: int = 64
    depth: int = 4
    sigma_data: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ToyModelConfig:
        unknown = set(d) - {"width", "depth", "sigma_data"}
        if unknown:
            raise UserInputError(f"unknown toy model settings: {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        if cfg.width < 1 or cfg.depth < 0 or not cfg.sigma_data > 0:
            raise UserInputError(f"invalid toy model settings: {d}")
        return cfg


class ToyModel(nn.Module):
    """A denoiser: forward(x, sigma, cond=None) = x + sigma^2 * grad_x log p_theta(x; sigma)."""

    def __init__(self, config: ToyModelConfig = ToyModelConfig()):
        super().__init__()
        self.config = config
        width = config.width
        self.layers = nn.ModuleList([MPConv(4, width)] + [MPConv(width, width) for _ in range(config.depth)])
        self.gain = nn.Parameter(torch.zeros([]))

    def log_density(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Unnormalised log p_theta(x; sigma) for x (B, 2), sigma (B,). Returns (B,)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(-1, 1)
        x_in = x / (self.config.sigma_data**2 + sigma**2).sqrt()
        y = torch.cat([x_in, sigma.log() / 4, torch.ones_like(sigma)], dim=1)
        y = self.layers[0](y)
        for layer in self.layers[1:]:
            y = layer(mp_silu(y))
        return self.gain * y.square().mean(dim=1) / sigma[:, 0] - 0.5 * x_in.square().sum(dim=1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad_x log p_theta(x; sigma) by automatic differentiation."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = self.log_density(x, sigma)
            (grad,) = torch.autograd.grad(logp.sum(), x, create_graph=create_graph)
        return grad

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return x + sigma.reshape(-1, 1) ** 2 * self.score(x, sigma)
