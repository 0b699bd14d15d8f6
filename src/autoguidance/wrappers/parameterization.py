"""Other diffusion parameterisations as EDM denoisers D(x, sigma, cond) (Karras et al. 2022, Sec. 2-4).

Every common model sees x_t = a(t) (x0 + sigma(t) eps), with a scale a and a noise level sigma in EDM's
sense; the sampler's x is x_t / a. A wrapper therefore (1) maps sigma to the model's timestep t,
(2) feeds x_t = a x, and (3) turns the model's prediction into x0_hat:

  schedule                         a(sigma)              t(sigma)
  VP, discrete (DDPM)              1 / sqrt(1 + s^2)     timestep index with alphas_cumprod[t] = 1/(1+s^2)
                                                         (interpolated in log sigma, or rounded)
  VP, continuous (linear beta)    1 / sqrt(1 + s^2)     (sqrt(b0^2 + 2 bd ln(1 + s^2)) - b0) / bd (EDM eq. 22)
  VP, continuous (cosine)          1 / sqrt(1 + s^2)     (2 / pi) arctan(s) (alpha_bar = cos^2(pi t / 2))
  flow matching (rectified)        1 / (1 + s)           s / (1 + s), as x_t = (1 - t) x0 + t eps

  prediction   x0_hat
  eps          x - s eps_hat                              (any schedule)
  v            a^2 x - s a v_hat, v = a eps - s a x0      (VP: v = sqrt(ab) eps - sqrt(1 - ab) x0)
  flow         a x - t v_hat, v = eps - x0                (flow matching velocity)
  sample       x0_hat itself

Timesteps are multiplied by `timestep_scale` for models trained on t in [0, 1000] (diffusers' flow
transformers). `cond` passes through to the model untouched, so any conditioning works (class labels,
text embeddings, dicts of added conditions); `null_cond` is what the model gets when called with
cond=None (the unconditional branch of CFG: a null label, an empty-prompt embedding), or a function of
the batch x that makes it (a null label per sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..denoiser import Signature, expand_sigma
from ..errors import UserInputError

PREDICTIONS = ("eps", "v", "flow", "sample")
_PREDICTION_ALIASES = {"epsilon": "eps", "v_prediction": "v", "flow_prediction": "flow", "velocity": "flow"}


def parse_prediction(name: str) -> str:
    key = _PREDICTION_ALIASES.get(str(name), str(name))
    if key not in PREDICTIONS:
        raise UserInputError(
            f"unknown prediction type {name!r}; known: {', '.join(PREDICTIONS)} (and aliases "
            f"{', '.join(_PREDICTION_ALIASES)})"
        )
    return key


class Schedule:
    """How a model's noisy input relates to EDM's (a(sigma), t(sigma)) and its sigma range."""

    kind = "vp"
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + sigma**2).sqrt()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DiscreteVP(Schedule):
    """DDPM-style schedule given by alphas_cumprod[0..T-1]: sigma_t = sqrt((1 - ab_t) / ab_t)."""

    def __init__(self, alphas_cumprod: torch.Tensor, quantize: bool = False):
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if ab.ndim != 1 or len(ab) < 2 or not bool(((ab > 0) & (ab < 1)).all()):
            raise UserInputError("alphas_cumprod must be a 1-D sequence of values in (0, 1)")
        self.sigmas = ((1 - ab) / ab).sqrt()
        if not bool((self.sigmas[1:] > self.sigmas[:-1]).all()):
            raise UserInputError("alphas_cumprod must decrease with the timestep")
        self.log_sigmas = self.sigmas.log()
        self.quantize = quantize
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep by linear interpolation in log sigma (clamped to [0, T-1])."""
        ls = sigma.to(torch.float64).clamp_min(1e-30).log()
        table = self.log_sigmas.to(ls.device)
        hi = torch.searchsorted(table, ls).clamp(1, len(table) - 1)
        lo = hi - 1
        w = ((ls - table[lo]) / (table[hi] - table[lo])).clamp(0, 1)
        t = lo + w
        return (t.round() if self.quantize else t).to(sigma.dtype)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        lo = t.floor().long().clamp(0, len(self.sigmas) - 2)
        w = t - lo
        table = self.log_sigmas.to(t.device)
        return (table[lo] * (1 - w) + table[lo + 1] * w).exp()


class LinearVP(Schedule):
    """Continuous VP SDE with linear beta(t) = b0 + bd t (Song et al. 2021; EDM eq. 22), t in [eps, 1]."""

    def __init__(self, beta_min: float = 0.1, beta_d: float = 19.9, t_min: float = 1e-3):
        self.b0, self.bd = float(beta_min), float(beta_d)
        self.sigma_min = float(self.sigma(torch.tensor(t_min)))
        self.sigma_max = float(self.sigma(torch.tensor(1.0)))

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.to(torch.float64)
        return (((self.b0**2 + 2 * self.bd * (1 + s**2).log()).sqrt() - self.b0) / self.bd).to(sigma.dtype)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return ((0.5 * self.bd * t**2 + self.b0 * t).exp() - 1).sqrt()


class CosineVP(Schedule):
    """Continuous cosine schedule alpha_bar(t) = cos^2(pi t / 2) (no offset): sigma = tan(pi t / 2)."""

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999):
        self.sigma_min = float(self.sigma(torch.tensor(t_min)))
        self.sigma_max = float(self.sigma(torch.tensor(t_max)))

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return (2 / math.pi) * torch.atan(sigma)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.tan(math.pi / 2 * torch.as_tensor(t, dtype=torch.float64))


class RectifiedFlow(Schedule):
    """x_t = (1 - t) x0 + t eps: a = 1 / (1 + sigma), t = sigma / (1 + sigma) (Liu et al. 2023)."""

    kind = "flow"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + sigma)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma / (1 + sigma)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return t / (1 - t)


ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""model(x_t, t, cond) -> prediction with x_t's shape (t: (B,) timesteps already scaled)."""


def x0_from_prediction(
    prediction: str, out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, schedule: Schedule
) -> torch.Tensor:
    """The table above: the model output `out` at EDM state x (B, ...), sigma (B,) -> x0_hat."""
    s = expand_sigma(sigma, x)
    if prediction == "eps":
        return x - s * out
    if prediction == "sample":
        return out
    a = schedule.scale(s)
    if prediction == "v":
        return a**2 * x - s * a * out
    t = schedule.timestep(s)
    return a * x - t * out  # flow: x_t - t v


class PredictionDenoiser(nn.Module):
    """An eps-, v-, flow- or x0-prediction model as an EDM denoiser D(x, sigma, cond)."""

    def __init__(
        self,
        model: ModelFn,
        prediction: str,
        schedule: Schedule,
        timestep_scale: float = 1.0,
        null_cond: Any = None,
    ):
        super().__init__()
        prediction = parse_prediction(prediction)
        if prediction == "v" and schedule.kind != "vp":
            raise UserInputError("v-prediction needs a variance-preserving schedule")
        if prediction == "flow" and schedule.kind != "flow":
            raise UserInputError("flow (velocity) prediction needs the rectified-flow schedule")
        if isinstance(model, nn.Module):
            self.model = model  # registered: .to(device) / .eval() reach it
        else:
            self._fn = model
        self.prediction = prediction
        self.schedule = schedule
        self.timestep_scale = float(timestep_scale)
        self.null_cond = null_cond
        self.signature = Signature()  # what it denoises, where known (`from_pipeline` says)

    def call_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        fn = self.model if "model" in self._modules else self._fn
        return fn(x_t, t, cond)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        s = expand_sigma(sigma, x)
        x_t = self.schedule.scale(s) * x
        t = self.schedule.timestep(sigma) * self.timestep_scale
        if cond is None:  # the unconditional branch: a fixed null condition, or one made per batch
            cond = self.null_cond(x) if callable(self.null_cond) else self.null_cond
        out = self.call_model(x_t, t, cond)
        if out.shape != x.shape:
            raise UserInputError(f"the model returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        return x0_from_prediction(self.prediction, out.to(x.dtype), x, sigma, self.schedule)
