"""Sigma schedules and the EDM samplers (Karras et al. 2022, Algorithm 2), over any denoiser.

The samplers know nothing about guidance: a guided denoiser is just another denoiser. Every evaluation of
step i runs inside `denoiser.sampler_step(sigma_i)`, so that a denoiser that decides once per step (the
guidance interval) decides from the step's schedule sigma, however it is wrapped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .denoiser import Denoiser, sampler_step
from .errors import UserInputError, check_int
from .seeds import SeedStreams


def edm_sigmas(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> torch.Tensor:
    """sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < N, then sigma_N = 0
    (EDM eq. 5). Returns N + 1 values in float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not (0 < sigma_min <= sigma_max):
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64)
    denom = max(num_steps - 1, 1)
    sig = (sigma_max ** (1 / rho) + i / denom * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])


@dataclass(frozen=True)
class Churn:
    """Stochastic churn (EDM Algorithm 2): at s_min <= sigma_i <= s_max raise the noise level by
    gamma = min(s_churn / N, sqrt(2) - 1) with fresh noise scaled by s_noise. s_churn = 0 is the ODE."""

    s_churn: float = 0.0
    s_min: float = 0.0
    s_max: float = math.inf
    s_noise: float = 1.0


@dataclass(frozen=True)
class SamplerSettings:
    """The EDM sampler's settings (EDM, Karras et al. 2022, eq. 5 and Algorithm 2), as plain data.

    steps N: noise levels before sigma = 0 (Heun: 2N - 1 evaluations, Euler: N). sigma_min, sigma_max,
    rho: the schedule of EDM eq. 5. churn (S_churn), s_tmin, s_tmax, s_noise: Algorithm 2's stochasticity
    (churn 0 is the deterministic ODE sampler).
    """

    steps: int = 32
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"
    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        if not (0 < self.sigma_min <= self.sigma_max < math.inf):
            raise UserInputError(
                f"the noise levels need 0 < sigma_min <= sigma_max < inf, got {self.sigma_min} and "
                f"{self.sigma_max}"
            )
        if not (math.isfinite(self.rho) and self.rho > 0):
            raise UserInputError(f"rho must be a positive number, got {self.rho}")
        if self.solver not in ("heun", "euler"):
            raise UserInputError(f"the solver must be heun or euler, got {self.solver!r}")
        if not (math.isfinite(self.churn) and self.churn >= 0):
            raise UserInputError(f"churn must be a number >= 0, got {self.churn}")
        if not (self.s_tmin >= 0 and self.s_tmax >= self.s_tmin):
            raise UserInputError(f"churn needs 0 <= s_tmin <= s_tmax, got {self.s_tmin}, {self.s_tmax}")
        if not (math.isfinite(self.s_noise) and self.s_noise > 0):
            raise UserInputError(f"s_noise must be a positive number, got {self.s_noise}")

    def sigmas(self) -> torch.Tensor:
        return edm_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)

    def churn_settings(self) -> Churn | None:
        if self.churn == 0:
            return None
        return Churn(s_churn=self.churn, s_min=self.s_tmin, s_max=self.s_tmax, s_noise=self.s_noise)

    def evaluations(self) -> int:
        """Denoiser evaluations per sample (the last Heun step to sigma = 0 is an Euler step)."""
        return 2 * self.steps - 1 if self.solver == "heun" else self.steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["s_tmax"] = None if math.isinf(self.s_tmax) else self.s_tmax  # JSON has no infinity
        return d


@dataclass
class Trajectory:
    """States x_i at each sigma_i (N + 1, B, ...) and the denoised estimates D(x_i; sigma_i) (N, B, ...)."""

    sigmas: torch.Tensor
    states: torch.Tensor
    denoised: torch.Tensor


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    solver: str = "heun",
    churn: Churn | None = None,
    streams: SeedStreams | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Integrate from x_0 = sigmas[0] * latents down to sigmas[-1] (usually 0).

    latents: (B, ...) unit Gaussian noise (seeded per sample, see `seeds.SeedStreams`).
    solver: "heun" (2N - 1 evaluations) or "euler" (N evaluations).
    churn: stochastic churn; its noise is drawn from `streams` so that seeds stay batch-independent.
    progress: a progress bar, drawn only on a terminal.
    Returns the final samples, and a `Trajectory` when `return_trajectory`. Runs without autograd: a
    denoiser that needs gradients inside (the toy model's score) enables them itself.
    (One function on purpose: it is EDM's Algorithm 2 line by line, which reads best in one piece.)
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}: use 'heun' or 'euler'")
    churn = churn or Churn()
    if churn.s_churn > 0 and streams is None:
        raise ValueError("stochastic churn needs per-sample SeedStreams for its noise")
    n = len(sigmas) - 1
    batch = latents.shape[0]
    sig = [float(s) for s in sigmas]
    x = latents * sig[0]
    states, denoised = [x], []

    def d_eval(x_in: torch.Tensor, s: float) -> torch.Tensor:
        return denoiser(x_in, torch.full((batch,), s, dtype=x_in.dtype, device=x_in.device), cond)

    for i in tqdm(range(n), disable=None if progress else True, desc="sampling", leave=False):
        s_cur, s_next = sig[i], sig[i + 1]
        # Churn: x_hat at s_hat = s (1 + gamma) with variance topped up by s_hat^2 - s^2 (EDM Alg. 2, l. 5-7).
        gamma = 0.0
        if churn.s_churn > 0 and churn.s_min <= s_cur <= churn.s_max:
            gamma = min(churn.s_churn / n, math.sqrt(2) - 1)
        s_hat = s_cur * (1 + gamma)
        x_hat = x
        if gamma > 0:
            eps = streams.randn(x.shape[1:], device=x.device, dtype=x.dtype)
            x_hat = x + math.sqrt(s_hat**2 - s_cur**2) * churn.s_noise * eps
        # Both evaluations of the step see the step's schedule sigma_i (the guidance interval's rule).
        with sampler_step(s_cur):
            # Euler step along dx/dsigma = (x - D) / sigma (EDM eq. 4 with sigma(t) = t).
            d_hat = d_eval(x_hat, s_hat)
            slope = (x_hat - d_hat) / s_hat
            x_next = x_hat + (s_next - s_hat) * slope
            # Heun's second-order correction, skipped on the last step to sigma = 0.
            if solver == "heun" and s_next > 0:
                slope_next = (x_next - d_eval(x_next, s_next)) / s_next
                x_next = x_hat + (s_next - s_hat) * 0.5 * (slope + slope_next)
        x = x_next
        if return_trajectory:
            states.append(x)
            denoised.append(d_hat)
        if callback is not None:
            callback(i, x)
    if return_trajectory:
        traj = Trajectory(sigmas=sigmas, states=torch.stack(states), denoised=torch.stack(denoised))
        return x, traj
    return x
