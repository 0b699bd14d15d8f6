"""The noise levels a sampler visits, in EDM's sigma, for diffusers models: EDM's own schedule over the
model's range, or the pipeline's scheduler's own steps converted to sigma.

EDM's sampler integrates dx/dsigma = (x - D(x; sigma)) / sigma on x = x_t / a (Karras et al. 2022,
eq. 4 with sigma(t) = t). Diffusers' Euler schedulers take the same steps in their own variables:

  EulerDiscreteScheduler (VP)      its `sigmas` are EDM's sigma = sqrt((1 - alpha_bar) / alpha_bar), and
                                   its x is EDM's x (scale_model_input divides by sqrt(sigma^2 + 1))
  FlowMatchEulerDiscreteScheduler  its `sigmas` are flow times t, x_t = (1 - t) x0 + t eps; EDM's
                                   sigma = t / (1 - t), x = x_t / (1 - t). The flow Euler step
                                   x_t' = x_t + (t' - t) v equals EDM's Euler step in x (both are the
                                   exact step for a constant x0 estimate, i.e. DDIM)
  others (DDPM, DDIM: IF)          timesteps -> alpha_bar -> sigma through the model's schedule

so with these sigmas the package's Euler sampler takes the scheduler's steps (tests show it to float
tolerance). Flow matching starts at t = 1 (sigma infinite); EDM's sampler cannot start at infinity and
starts at t = 0.999 (sigma = 999) instead: x_t = 0.001 x0 + 0.999 eps, and float32
stays exact enough (the first step cancels sigma_0-sized terms).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserInputError
from ..sampling import SamplerSettings
from .parameterization import Schedule

SCHEDULES = ("edm", "scheduler")
FLOW_T_MAX = 1 - 1e-3  # the flow time a sampler starts at in place of t = 1 (sigma = 999)


def flow_shift_mu(scheduler: Any, image_seq_len: int) -> float:
    """Resolution-dependent shift of flow schedulers with `use_dynamic_shifting` (Esser et al. 2024,
    SD3 paper Sec. 5.3.2): mu linear in the number of image tokens between (base_image_seq_len,
    base_shift) and (max_image_seq_len, max_shift)."""
    cfg = scheduler.config
    lo_n, hi_n = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    lo_s, hi_s = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    slope = (hi_s - lo_s) / (hi_n - lo_n)
    return image_seq_len * slope + (lo_s - slope * lo_n)


def scheduler_sigmas(
    scheduler: Any, num_steps: int, schedule: Schedule, image_seq_len: int | None = None
) -> torch.Tensor:
    """The scheduler's own noise levels for `num_steps` steps as EDM sigmas (N + 1 values in float64,
    ending at 0), for the package's samplers. `schedule` is the model's (`DiscreteVP` for VP models);
    `image_seq_len` (latent tokens) is needed only by flow schedulers with dynamic shifting."""
    if num_steps < 1:
        raise UserInputError(f"the number of steps must be >= 1, got {num_steps}")
    name = type(scheduler).__name__
    if "FlowMatch" in name:
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            if image_seq_len is None:
                raise UserInputError(f"{name} shifts its schedule by resolution: give the image size")
            kwargs["mu"] = flow_shift_mu(scheduler, image_seq_len)
        scheduler.set_timesteps(num_steps, **kwargs)
        t = scheduler.sigmas.to(torch.float64).clamp(0, FLOW_T_MAX)
        return t / (1 - t)
    scheduler.set_timesteps(num_steps)
    sig = getattr(scheduler, "sigmas", None)
    if sig is not None and len(sig) == len(scheduler.timesteps) + 1 and ("Euler" in name or "Heun" in name):
        return sig.to(torch.float64)  # already EDM sigmas (VP), with the final 0
    t = torch.as_tensor(scheduler.timesteps, dtype=torch.float64)
    s = schedule.sigma(t).to(torch.float64)
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def sampler_sigmas(
    kind: str,
    num_steps: int,
    schedule: Schedule,
    scheduler: Any = None,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
    image_seq_len: int | None = None,
) -> torch.Tensor:
    """kind "edm": EDM's schedule (EDM eq. 5, the core's `SamplerSettings` with its checks) over
    [sigma_min, sigma_max], by default the model's trained range with the top capped at EDM's 80; kind
    "scheduler": `scheduler_sigmas`. Either way the sigmas go to the generation loop as `sigmas=`."""
    if kind not in SCHEDULES:
        raise UserInputError(f"unknown schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    if kind == "scheduler":
        if scheduler is None:
            raise UserInputError("--schedule scheduler needs the pipeline's scheduler")
        if sigma_min is not None or sigma_max is not None:
            raise UserInputError("sigma_min / sigma_max apply to the edm schedule only")
        return scheduler_sigmas(scheduler, num_steps, schedule, image_seq_len)
    lo = schedule.sigma_min if sigma_min is None else float(sigma_min)
    hi = min(schedule.sigma_max, 80.0) if sigma_max is None else float(sigma_max)
    return SamplerSettings(steps=num_steps, sigma_min=lo, sigma_max=hi, rho=rho).sigmas()  # EDM eq. 5
