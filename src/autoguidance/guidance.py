"""Guided denoisers: a main denoiser extrapolated away from one or more guides.

    D(x; sigma) = D_main + sum_i (w_i - 1) (D_main - D_i)            (autoguidance paper, eq. 1 / Sec. 2)

One term whose guide is a weaker model of the same task and conditioning is *autoguidance*; one whose
guide is the unconditional model is *classifier-free guidance*; a guide with D_i(x) = x (zero score)
gives naive truncation, D = x + w (D_main - x); two terms interpolate CFG and autoguidance. Guides are
evaluated only inside the guidance interval sigma_lo < sigma <= sigma_hi (Kynkaanniemi et al. 2024), and
never for samples outside it or for a term with w = 1. No sampling and no networks live here.

The interval as its authors apply it is decided once per sampler step, from that step's sigma, and both
evaluations of a Heun step follow the decision: a sampler asks `GuidedDenoiser.at_step(sigma_i)` for the
step's denoiser. Called directly, a GuidedDenoiser decides per evaluation from the sigma it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .denoiser import Denoiser, identity_denoiser, without_condition
from .errors import UserInputError


def check_weight(w: float, name: str = "guidance weight") -> float:
    """Reject NaN, infinite and negative guidance weights with a one-line message."""
    w = float(w)
    if not math.isfinite(w):
        raise UserInputError(f"{name} must be a finite number, got {w}")
    if w < 0:
        raise UserInputError(f"{name} must be >= 0, got {w}")
    return w


def check_interval(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    if interval is None:
        return None
    lo, hi = (float(v) for v in interval)
    if not (math.isfinite(lo) and lo >= 0 and hi > lo):
        raise UserInputError(f"guidance interval must satisfy 0 <= lo < hi, got ({lo}, {hi})")
    return lo, hi


def _declared(denoiser: Denoiser) -> tuple[int, int, int] | None:
    """(resolution, channels, classes) of a network that declares them in its `config` (EDM2Denoiser's
    NetConfig), None for any other denoiser (a function, a toy model, a wrapped guide)."""
    config = getattr(denoiser, "config", None)
    fields = ("img_resolution", "img_channels", "label_dim")
    if config is None or not all(isinstance(getattr(config, f, None), int) for f in fields):
        return None
    return tuple(getattr(config, f) for f in fields)


def check_guide(main: Denoiser, guide: Denoiser, same_classes: bool = True, name: str = "guide") -> None:
    """UserInputError unless a guide works on the main model's images (and, when `same_classes`, on its
    classes): checked only when both declare them. Autoguidance needs the same task and conditioning
    (paper Sec. 3); a CFG guide is called without labels, so only its images must match."""
    a, b = _declared(main), _declared(guide)
    if a is None or b is None:
        return
    if a[:2] != b[:2]:
        raise UserInputError(
            f"{name} works on {b[1]}x{b[0]}x{b[0]} images, the main model on {a[1]}x{a[0]}x{a[0]}"
        )
    if same_classes and a[2] != b[2]:
        raise UserInputError(f"{name} has {b[2]} classes, the main model {a[2]}")


@dataclass(frozen=True)
class GuideTerm:
    """One guide D_i and its weight w_i; the term adds (w_i - 1)(D_main - D_i)."""

    denoiser: Denoiser
    weight: float


class GuidedDenoiser:
    """D_main + sum_i (w_i - 1)(D_main - D_i), with guides active only inside an optional interval."""

    def __init__(
        self,
        main: Denoiser,
        terms: Sequence[GuideTerm],
        interval: tuple[float, float] | None = None,
    ):
        self.main = main
        self.terms = [GuideTerm(t.denoiser, check_weight(t.weight)) for t in terms]
        self.interval = check_interval(interval)
        self._unbounded: GuidedDenoiser | None = None  # this guidance without its interval (at_step)

    def active(self, sigma: torch.Tensor) -> torch.Tensor:
        """Boolean (B,) mask of samples whose sigma lies in the guidance interval (lo, hi]."""
        if self.interval is None:
            return torch.ones(sigma.shape, dtype=torch.bool, device=sigma.device)
        lo, hi = self.interval
        return (sigma > lo) & (sigma <= hi)

    def at_step(self, sigma_step: float) -> Denoiser:
        """The denoiser for one whole sampler step whose schedule sigma is `sigma_step`.

        The guidance interval's per-step rule (Kynkaanniemi et al. 2024, as in their sampler): inside
        (lo, hi] the step is guided for every evaluation it makes, the Heun correction at sigma_{i+1}
        included, even where sigma_{i+1} lies outside; outside, the main model alone, guides unevaluated.
        """
        if self.interval is None:
            return self
        lo, hi = self.interval
        if not (lo < float(sigma_step) <= hi):
            return self.main
        if self._unbounded is None:
            self._unbounded = GuidedDenoiser(self.main, self.terms, None)
        return self._unbounded

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        d_main = self.main(x, sigma, cond)
        terms = [t for t in self.terms if t.weight != 1.0]  # w = 1 contributes nothing: skip its cost
        if not terms:
            return d_main
        mask = self.active(sigma)
        if not bool(mask.any()):
            return d_main
        everyone = bool(mask.all())
        xs, ss = (x, sigma) if everyone else (x[mask], sigma[mask])
        cs = cond if (cond is None or everyone) else cond[mask]
        dm = d_main if everyone else d_main[mask]
        guided = dm.clone()
        for term in terms:
            guided = guided + (term.weight - 1.0) * (dm - term.denoiser(xs, ss, cs))
        if everyone:
            return guided
        out = d_main.clone()
        out[mask] = guided
        return out


def autoguidance(
    main: Denoiser, guide: Denoiser, w: float, interval: tuple[float, float] | None = None
) -> GuidedDenoiser:
    """D_w = D_guide + w (D_main - D_guide), the guide a weaker model of the same task (paper eq. 1)."""
    check_guide(main, guide)
    return GuidedDenoiser(main, [GuideTerm(guide, w)], interval)


def classifier_free(
    cond_model: Denoiser, uncond_model: Denoiser, w: float, interval: tuple[float, float] | None = None
) -> GuidedDenoiser:
    """CFG: the guide is the unconditional model (a separate net, or the same net with a null label).
    It is always called with cond=None, so an unconditional network that refuses labels plugs in."""
    check_guide(cond_model, uncond_model, same_classes=False, name="unconditional model")
    return GuidedDenoiser(cond_model, [GuideTerm(without_condition(uncond_model), w)], interval)


def truncation(main: Denoiser, scale: float, interval: tuple[float, float] | None = None) -> GuidedDenoiser:
    """Naive score scaling D = x + scale (D_main - x): guidance by a guide with zero score."""
    return GuidedDenoiser(main, [GuideTerm(identity_denoiser, scale)], interval)


def interpolated(
    main: Denoiser,
    uncond_model: Denoiser,
    weak_model: Denoiser,
    w: float,
    alpha: float,
    interval: tuple[float, float] | None = None,
) -> GuidedDenoiser:
    """Blend CFG (alpha = 0) and autoguidance (alpha = 1) at total strength w (paper App. B.3):
    w_u = (1 - alpha)(w - 1) + 1 for the unconditional guide, w_c = alpha (w - 1) + 1 for the weak one."""
    check_guide(main, uncond_model, same_classes=False, name="unconditional model")
    check_guide(main, weak_model, name="weak model")
    alpha = float(alpha)
    if not (0.0 <= alpha <= 1.0):
        raise UserInputError(f"interpolation alpha must lie in [0, 1], got {alpha}")
    w = check_weight(w)
    return GuidedDenoiser(
        main,
        [
            GuideTerm(without_condition(uncond_model), (1 - alpha) * (w - 1) + 1),
            GuideTerm(weak_model, alpha * (w - 1) + 1),
        ],
        interval,
    )
