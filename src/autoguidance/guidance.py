"""Guided denoisers: a main denoiser extrapolated away from one or more guides.

    D(x; sigma) = D_main + sum_i (w_i - 1) (D_main - D_i)            (autoguidance paper, eq. 1 / Sec. 2)

One term whose guide is a weaker model of the same task and conditioning is *autoguidance*; one whose
guide is the unconditional model is *classifier-free guidance*; a guide with D_i(x) = x (zero score)
gives naive truncation, D = x + w (D_main - x); two terms interpolate CFG and autoguidance (App. B.3).
Guides are evaluated only inside the guidance interval sigma_lo < sigma <= sigma_hi (Kynkaanniemi et al.
2024), and never for a term with w = 1. No sampling and no networks live here.

`guided` is the one builder: main model, guide (a network, a weak guide, the identity), unconditional
model, weights and interval, with `check_guide` as the one compatibility check. The interval as its
authors apply it is decided once per sampler step, from that step's sigma (`denoiser.current_step`), and
both evaluations of a Heun step follow the decision; called outside a sampler, a GuidedDenoiser decides
per sample from the sigma it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .denoiser import (
    Denoiser,
    Signature,
    current_step,
    identity_denoiser,
    select_rows,
    signature,
    without_condition,
)
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


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def check_guide(main: Any, guide: Any, role: str = "guide") -> None:
    """The one compatibility check: UserInputError unless `guide` denoises what `main` denoises.

    main / guide: denoisers, network configs or `Signature`s; only what both declare is compared. Every
    guide must work on the main model's samples (shape) and, but for the unconditional model, take the
    main model's kind of conditioning (a prompt's embedding, say). role "autoguidance" (the same task and
    conditioning, paper Sec. 3) needs the main model's classes; role "guide" accepts those or none (an
    unconditional guide of a conditional model, i.e. CFG); role "uncond" (CFG's guide, called without
    labels) must be unconditional.
    """
    a, b = signature(main), signature(guide)
    name = "the unconditional model" if role == "uncond" else "the guide"
    if a.shape is not None and b.shape is not None and a.shape != b.shape:
        raise UserInputError(
            f"{name} works on {_shape_text(b.shape)} samples, the main model on {_shape_text(a.shape)}"
        )
    if role != "uncond" and a.conditioning and b.conditioning and a.conditioning != b.conditioning:
        raise UserInputError(f"{name} takes {b.conditioning} conditioning, the main model {a.conditioning}")
    if b.classes is None or a.classes is None:
        return
    if role == "uncond" and b.classes != 0:
        raise UserInputError(f"{name} must be unconditional (no class labels); it has {b.classes} classes")
    allowed = {"guide": (a.classes, 0), "autoguidance": (a.classes,)}.get(role, (b.classes,))
    if b.classes not in allowed:
        raise UserInputError(f"{name} has {b.classes} classes, the main model {a.classes}")


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

    @property
    def signature(self) -> Signature:
        return signature(self.main)

    def components(self) -> list[Any]:
        return [self.main, *(t.denoiser for t in self.terms)]

    def inside(self, sigma: torch.Tensor | float) -> torch.Tensor | bool:
        """Whether sigma lies in the guidance interval (lo, hi] (elementwise for a tensor)."""
        if self.interval is None:
            return True
        lo, hi = self.interval
        return (sigma > lo) & (sigma <= hi)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        d_main = self.main(x, sigma, cond)
        terms = [t for t in self.terms if t.weight != 1.0]  # w = 1 contributes nothing: skip its cost
        if not terms:
            return d_main
        step = current_step()
        if step is not None:
            # Inside a sampler: the step's schedule sigma decides for every evaluation of the step (the
            # Heun correction at sigma_{i+1} included, even where sigma_{i+1} lies outside).
            return self._combine(terms, x, sigma, cond, d_main) if self.inside(step) else d_main
        mask = torch.ones_like(sigma, dtype=torch.bool) if self.interval is None else self.inside(sigma)
        if not bool(mask.any()):
            return d_main
        if bool(mask.all()):
            return self._combine(terms, x, sigma, cond, d_main)
        out = d_main.clone()
        out[mask] = self._combine(
            terms, x[mask], sigma[mask], select_rows(cond, mask, x.shape[0]), d_main[mask]
        )
        return out

    @staticmethod
    def _combine(terms: list[GuideTerm], x, sigma, cond, d_main: torch.Tensor) -> torch.Tensor:
        guided = d_main.clone()
        for term in terms:
            guided = guided + (term.weight - 1.0) * (d_main - term.denoiser(x, sigma, cond))
        return guided


def guided(
    main: Denoiser,
    guide: Denoiser | None = None,
    w: float = 1.0,
    *,
    uncond: Denoiser | None = None,
    w_uncond: float = 1.0,
    interval: tuple[float, float] | None = None,
) -> Denoiser:
    """THE builder of the denoiser to sample.

    main: the main model D_1. guide: the autoguidance guide (a weaker model of the same task, a weak
    guide derived from `main`, or `identity_denoiser` for truncation) with weight `w`; an unconditional
    guide of a class-conditional main model is called without labels (that is CFG). uncond: an
    unconditional model for an extra CFG term with weight `w_uncond`, called with cond=None (may be
    `main` itself, for a network that maps None to its null label or empty/negative prompt: a main
    model that declares neither classes nor other conditioning cannot have a CFG term). The result is
    D = D_1 + (w - 1)(D_1 - D_guide) + (w_uncond - 1)(D_1 - D_uncond) inside `interval`, or `main`
    itself when nothing guides. A weight other than 1 or an interval without a guide is an error rather
    than silently ignored.
    """
    w, w_uncond, interval = check_weight(w), check_weight(w_uncond, "CFG weight"), check_interval(interval)
    terms = []
    if guide is not None:
        check_guide(main, guide)
        unconditional = signature(guide).classes == 0 and (signature(main).classes or 0) > 0
        terms.append(GuideTerm(without_condition(guide) if unconditional else guide, w))
    elif w != 1.0:
        raise UserInputError(f"guidance weight {w:g} needs a guide")
    if uncond is not None:
        if uncond is not main:
            check_guide(main, uncond, role="uncond")
        if signature(main).classes == 0 and signature(main).conditioning is None:
            raise UserInputError(
                "classifier-free guidance needs a conditional main model (class labels or a prompt)"
            )
        terms.append(GuideTerm(without_condition(uncond), w_uncond))
    elif w_uncond != 1.0:
        raise UserInputError(f"CFG weight {w_uncond:g} needs an unconditional model")
    if not terms:
        if interval is not None:
            raise UserInputError("a guidance interval needs a guide")
        return main
    return GuidedDenoiser(main, terms, interval)


def autoguidance(
    main: Denoiser, guide: Denoiser, w: float, interval: tuple[float, float] | None = None
) -> Denoiser:
    """D_w = D_guide + w (D_main - D_guide), the guide a weaker model of the same task and conditioning
    (paper eq. 1)."""
    check_guide(main, guide, role="autoguidance")
    return guided(main, guide, w, interval=interval)


def classifier_free(
    cond_model: Denoiser, uncond_model: Denoiser, w: float, interval: tuple[float, float] | None = None
) -> Denoiser:
    """CFG: the guide is the unconditional model (a separate net, or the same net with a null label),
    always called with cond=None."""
    return guided(cond_model, uncond=uncond_model, w_uncond=w, interval=interval)


def truncation(main: Denoiser, scale: float, interval: tuple[float, float] | None = None) -> Denoiser:
    """Naive score scaling D = x + scale (D_main - x): guidance by a guide with zero score."""
    return guided(main, identity_denoiser, scale, interval=interval)


def interpolation_weights(w: float, alpha: float) -> tuple[float, float]:
    """(w_guide, w_uncond) of the blend of CFG (alpha = 0) and autoguidance (alpha = 1) at total strength
    w (paper App. B.3): w_uncond = (1 - alpha)(w - 1) + 1, w_guide = alpha (w - 1) + 1."""
    alpha, w = float(alpha), check_weight(w)
    if not (0.0 <= alpha <= 1.0):
        raise UserInputError(f"interpolation alpha must lie in [0, 1], got {alpha}")
    return alpha * (w - 1) + 1, (1 - alpha) * (w - 1) + 1


def interpolated(
    main: Denoiser,
    uncond_model: Denoiser,
    weak_model: Denoiser,
    w: float,
    alpha: float,
    interval: tuple[float, float] | None = None,
) -> Denoiser:
    """Blend CFG (alpha = 0) and autoguidance (alpha = 1) at total strength w (paper App. B.3)."""
    w_guide, w_uncond = interpolation_weights(w, alpha)
    return guided(main, weak_model, w_guide, uncond=uncond_model, w_uncond=w_uncond, interval=interval)
