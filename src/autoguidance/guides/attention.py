"""Self-attention at a raised temperature: a training-free weak guide for attention networks (diffusers'
UNets and MMDiTs).

The guide is the main network with every self-attention's queries scaled by TAU in [0, 1], i.e. the
attention weights softmax(TAU q.k / sqrt(d)) (Vaswani et al. 2017, eq. 1, logits scaled by TAU):
attention at temperature 1 / TAU, smoothed towards the uniform average of the values. TAU = 1 is the main
network exactly; TAU = 0 is the limit of blurring the queries (Hong 2024, "Smoothed Energy Guidance").
Autoguidance wants a guide with the main model's kind of errors, only more of them (paper Sec. 3):
attention that sees its context less sharply is such a degradation of the very same network.

Targets: self-attention, i.e. queries attending over the image tokens, or over image and text tokens
jointly (SD3's joint attention, whose image queries are scaled); cross-attention to the prompt is kept.
After a query normalisation (SD3.5's qk-norm) the scale follows the norm. Hooks are attached only while
the guide evaluates (`base.hooked`), at the query projection the network has at that moment, so a LoRA
loaded after the guide is made is degraded too, and the main model never sees the hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from .base import DerivedGuide, hooked, named_modules


def self_attentions(root: nn.Module, under: Sequence[str] = ()) -> list[tuple[str, nn.Module]]:
    """diffusers' self-attention modules of `root` (all, or those under the module names `under`)."""
    picked = []
    for name, m in root.named_modules():
        if not (hasattr(m, "to_q") and hasattr(m, "processor")):
            continue
        joint = getattr(m, "added_kv_proj_dim", None) is not None  # image and text tokens together
        cross_only = getattr(m, "is_cross_attention", False) and not joint
        if cross_only or getattr(m, "only_cross_attention", False):
            continue
        if under and not any(name == p or name.startswith(p + ".") for p in under):
            continue
        picked.append((name, m))
    return picked


def _query_site(attention: nn.Module) -> nn.Module:
    """The module whose output is the attention's queries as the dot product sees them."""
    norm = getattr(attention, "norm_q", None)
    return norm if norm is not None else attention.to_q


class AttentionTemperatureGuide(DerivedGuide):
    """The main network with its self-attention queries scaled by `tau` while the guide evaluates it.
    `names`: only the self-attention under these modules of `root` (default `net`)."""

    def __init__(self, net: nn.Module, tau: float, names: Sequence[str] = (), root: nn.Module | None = None):
        super().__init__(net)
        tau = float(tau)
        if not (0.0 <= tau <= 1.0):
            raise UserInputError(f"attention guide: TAU must lie in [0, 1], got {tau}")
        root = net if root is None else root
        names = [n for n in names if n]
        named_modules(root, names, "attention guide", [n for n, _ in self_attentions(root)])
        found = self_attentions(root, names)
        if not found:
            raise UserInputError("attention guide: no self-attention in the network (or under the names)")
        self.tau = tau
        self.targets = [n for n, _ in found]
        self._attentions = [m for _, m in found]  # a plain list: the modules belong to the main network

    def _scale_queries(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * self.tau

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.tau == 1.0:  # the main network itself: no hooks at all
            return self.net(x, sigma, cond)

        def register() -> list[Any]:
            return [_query_site(a).register_forward_hook(self._scale_queries) for a in self._attentions]

        with hooked(register):
            return self.net(x, sigma, cond)
