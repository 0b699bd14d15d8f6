"""The denoiser convention every part of autoguidance shares (EDM, Karras et al. 2022).

A denoiser is any callable ``D(x, sigma, cond=None) -> x0_hat`` that estimates E[y | x] for
x = y + n, n ~ N(0, sigma^2 I) (EDM eq. 2-3). ``x`` has shape (B, ...), ``sigma`` shape (B,) (one noise
level per sample). ``cond`` is anything the denoiser understands: None, a (B,) tensor of class labels,
(B, ...) text embeddings, or a dict (nested dicts allowed) of such tensors, e.g. a prompt's embeddings with
its pooled embedding and time ids. Tensors in ``cond`` carry one row per sample; anything else in it (a
scalar, a string, a tensor whose first dimension is not the batch) is shared by all samples. Its score is
(D - x) / sigma^2.

Two small protocols sit on top:

- A denoiser may declare what it works on, as a `Signature` (the shape of one sample and the number of
  class labels), so that guidance can check a guide against its main model before any work.
- Samplers run every evaluation of step i inside `sampler_step(sigma_i)`; a denoiser that decides once
  per step (the guidance interval, guidance.py) reads that step with `current_step()`. Because the step is
  context rather than an attribute, wrapping a step-aware denoiser in anything keeps the per-step rule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Signature:
    """What a denoiser works on: `shape` (C, H, W) of one sample, `classes` the number of class labels it
    takes (0: none). None where it does not say (a plain function, the toy's models). `conditioning`
    names a condition other than class labels that it takes as `cond` (e.g. "text": a prompt's
    embedding, with cond=None its null or negative prompt); None for none, or where it does not say."""

    shape: tuple[int, ...] | None = None
    classes: int | None = None
    conditioning: str | None = None


def signature(obj: Any) -> Signature:
    """The `Signature` a denoiser (or a network config) declares through a `signature` attribute, or an
    empty one."""
    if isinstance(obj, Signature):
        return obj
    declared = getattr(obj, "signature", None)
    return declared if isinstance(declared, Signature) else Signature()


_STEP: ContextVar[float | None] = ContextVar("autoguidance_sampler_step", default=None)


@contextlib.contextmanager
def sampler_step(sigma: float) -> Iterator[None]:
    """Run the evaluations of one sampler step whose schedule noise level is `sigma` (samplers do)."""
    token = _STEP.set(float(sigma))
    try:
        yield
    finally:
        _STEP.reset(token)


def current_step() -> float | None:
    """The schedule sigma_i of the sampler step being evaluated, or None outside a sampler."""
    return _STEP.get()


def expand_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Return sigma as a (B, 1, ..., 1) tensor that broadcasts against x of shape (B, ...)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def select_rows(cond: Any, rows: torch.Tensor | slice, batch: int) -> Any:
    """The conditioning of a subset of the batch: every tensor in `cond` (nested dicts too) whose first
    dimension is the batch size `batch` is indexed by `rows` (a boolean mask, indices or a slice);
    anything else is shared and passed on unchanged."""
    if torch.is_tensor(cond):
        return cond[rows] if cond.ndim > 0 and cond.shape[0] == batch else cond
    if isinstance(cond, dict):
        return {k: select_rows(v, rows, batch) for k, v in cond.items()}
    return cond


def score_from_denoiser(d: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x; sigma) = (D(x; sigma) - x) / sigma^2 (EDM eq. 3)."""
    return (d - x) / expand_sigma(sigma, x) ** 2


def denoiser_from_score(score: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """D(x; sigma) = x + sigma^2 * score (Tweedie's formula)."""
    return x + expand_sigma(sigma, x) ** 2 * score


def identity_denoiser(x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
    """D(x) = x: the zero score. As a guide it turns guidance into naive score scaling (truncation)."""
    return x


class Unconditional:
    """The unconditional view of a denoiser: called with cond=None whatever the caller passes (CFG's
    guide; a network that maps None to its null label or empty prompt)."""

    def __init__(self, denoiser: Denoiser):
        self.inner = denoiser

    @property
    def signature(self) -> Signature:
        return Signature(signature(self.inner).shape, 0)

    def components(self) -> list[Any]:
        return [self.inner]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.inner(x, sigma, None)


def without_condition(denoiser: Denoiser) -> Denoiser:
    """`Unconditional(denoiser)`."""
    return Unconditional(denoiser)


def modules_of(denoiser: Any) -> list[torch.nn.Module]:
    """The torch modules a (composite) denoiser evaluates: itself if it is one, else those of its
    `components()` (guided denoisers, unconditional views), without repeats."""
    out: list[torch.nn.Module] = []
    stack = [denoiser]
    while stack:
        d = stack.pop()
        if isinstance(d, torch.nn.Module):
            if all(d is not m for m in out):
                out.append(d)
        elif hasattr(d, "components"):
            stack.extend(d.components())
    return out


@contextlib.contextmanager
def evaluating(denoiser: Any) -> Iterator[None]:
    """Evaluate `denoiser`'s modules in eval mode (training mode would apply dropout and, for EDM2's
    networks, rewrite the weights by forced normalisation), restoring each module's mode afterwards."""
    modules = modules_of(denoiser)
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
