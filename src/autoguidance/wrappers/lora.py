"""LoRA guides that share the main model's weights: one base network, adapters switched per evaluation.

A fine-tuned model is often base + LoRA at scale s (W' = W + s (alpha / r) B A, Hu et al. 2022). Its
natural "bad version of itself" (autoguidance, Karras et al. 2024, Sec. 3: the same task and
conditioning, weaker) is the same base with that LoRA at a lower scale, an earlier (less trained) LoRA,
or no LoRA at all. All of these are the *same* network object: peft keeps the base weights once and each
adapter's low-rank factors beside them, so a guide is only an adapter configuration. `AdapterView` is
the shared denoiser evaluated under one configuration: it sets the configuration it needs before its
evaluation and restores the previous one afterwards; nothing is copied, merged or reloaded. Setting a
configuration only rewrites each LoRA layer's active adapters and scaling (diffusers' `set_adapters`,
`disable_lora`), so the main model's output is bit-identical before and after a guide evaluation.

Text encoders: a LoRA that also adapts the text encoders is applied there at the main model's scales,
once, to the prompt embedding that main model and guide share; the guide differs from the main model in
the denoising network only.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..denoiser import Signature, signature
from ..errors import UserInputError
from .hf_logs import captured_logs, first_line
from .text_pipelines import TextPipeline


@dataclass(frozen=True)
class Adapters:
    """One adapter configuration of a network: (name, scale) pairs; scale-0 adapters are dropped, and
    no pairs at all means the base network alone (adapters disabled)."""

    scales: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, float] | None = None) -> Adapters:
        pairs = []
        for name, scale in (mapping or {}).items():
            scale = float(scale)
            if not math.isfinite(scale):
                raise UserInputError(f"LoRA scale must be a finite number, got {scale}")
            if scale != 0.0:
                pairs.append((str(name), scale))
        return cls(tuple(pairs))

    def describe(self) -> str:
        return ", ".join(f"{n} x {s:g}" for n, s in self.scales) or "no LoRA"


class AdapterSwitch:
    """Owns the adapter configuration of one peft-adapted diffusers network (UNet or transformer)."""

    def __init__(self, network: nn.Module):
        if not hasattr(network, "set_adapters"):
            raise UserInputError(f"{type(network).__name__} cannot take LoRA adapters")
        self.network = network
        self.current: Adapters | None = None  # unknown until first applied

    def names(self) -> list[str]:
        return list(getattr(self.network, "peft_config", {}) or {})

    def apply(self, adapters: Adapters) -> None:
        if adapters == self.current:
            return
        if not adapters.scales:
            self.network.disable_lora()
        else:
            missing = [n for n, _ in adapters.scales if n not in self.names()]
            if missing:
                raise UserInputError(f"no LoRA adapter named {missing[0]!r} in the network")
            self.network.enable_lora()
            self.network.set_adapters([n for n, _ in adapters.scales], [s for _, s in adapters.scales])
        self.current = adapters

    @contextlib.contextmanager
    def using(self, adapters: Adapters) -> Iterator[None]:
        """`adapters` for the duration of the block, the previous configuration restored afterwards."""
        previous = self.current
        self.apply(adapters)
        try:
            yield
        finally:
            if previous is not None:
                self.apply(previous)


class AdapterView(nn.Module):
    """D(x, sigma, cond) of a shared denoiser under one adapter configuration (the main model's, or a
    guide's). Views of one network share its parameters: a guide adds no weights."""

    def __init__(self, denoiser: nn.Module, switch: AdapterSwitch, adapters: Adapters):
        super().__init__()
        self.denoiser = denoiser
        self.switch = switch
        self.adapters = adapters

    @property
    def schedule(self):
        return self.denoiser.schedule

    @property
    def prediction(self) -> str:
        return self.denoiser.prediction

    @property
    def signature(self) -> Signature:  # the shared denoiser's: a guide view denoises what the main view does
        return signature(self.denoiser)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        with self.switch.using(self.adapters):
            return self.denoiser(x, sigma, cond)


def load_lora(tp: TextPipeline, path: str | os.PathLike, name: str, flag: str = "--lora") -> None:
    """Load a LoRA file (or folder) into the main pipeline under adapter `name`, with diffusers' loader
    (which also converts the common community formats). One-line UserInputError if the file is missing
    or the LoRA does not fit the network (unknown modules, other shapes, no weights for the network)."""
    if tp.pipe is None or not hasattr(tp.pipe, "load_lora_weights"):
        raise UserInputError(f"{flag}: this pipeline cannot load LoRA adapters")
    text = str(path)
    local = os.path.exists(text)
    if not local and ("/" not in text or text.startswith((".", "/")) or text.count("/") != 1):
        raise UserInputError(f"{flag} {text}: no such file or folder")
    network = tp.network
    with captured_logs() as logs:
        try:
            tp.pipe.load_lora_weights(text, adapter_name=name, local_files_only=local)
        except Exception as exc:
            raise UserInputError(
                f"{flag} {text} does not fit the {type(network).__name__}: {first_line(exc)}"
            ) from None
    if name not in (getattr(network, "peft_config", None) or {}):
        raise UserInputError(
            f"{flag} {text} has no weights for the {type(network).__name__}: it does not fit this model"
        )
    unfit = [m for m in logs if "unexpected keys" in m or "missing keys" in m]
    if unfit:
        raise UserInputError(f"{flag} {text} does not fit the {type(network).__name__}: {unfit[0][:200]}")


def set_text_encoder_adapters(tp: TextPipeline, adapters: Adapters) -> None:
    """The text encoders' adapters at the main model's configuration, before the prompt is encoded."""
    for part in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        enc = getattr(tp.pipe, part, None)
        loaded = list(getattr(enc, "peft_config", None) or {}) if enc is not None else []
        if not loaded:
            continue
        from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

        active = [(n, s) for n, s in adapters.scales if n in loaded]
        if not active:
            set_adapter_layers(enc, enabled=False)
        else:
            set_adapter_layers(enc, enabled=True)
            set_weights_and_activate_adapters(enc, [n for n, _ in active], [s for _, s in active])


@dataclass
class LoraSetup:
    """The main model's view and, when asked for, a LoRA guide's view of one shared network."""

    main: AdapterView
    guide: AdapterView | None
    switch: AdapterSwitch


def lora_views(
    tp: TextPipeline,
    lora: str | None = None,
    lora_scale: float = 1.0,
    guide_lora: str | None = None,
    guide_lora_scale: float | None = None,
) -> LoraSetup | None:
    """Load the LoRAs and make the views: main = base + `lora` at `lora_scale`; the guide is
    base + `guide_lora` at `guide_lora_scale` (default 1) when `guide_lora` is given, else base + `lora`
    at `guide_lora_scale` when that is given (0: the base alone), else none. None when no LoRA is used.
    The text encoders are left at the main model's configuration."""
    if lora is None and guide_lora is None:
        if guide_lora_scale is not None:
            raise UserInputError("--guide-lora-scale needs --lora (the main model's LoRA) or --guide-lora")
        return None
    main_name = _fresh_name(tp, "main")
    if lora is not None:
        load_lora(tp, lora, main_name, "--lora")
    main = Adapters.of({main_name: lora_scale} if lora is not None else {})
    guide: Adapters | None = None
    if guide_lora is not None:
        if lora is not None and os.path.realpath(str(guide_lora)) == os.path.realpath(str(lora)):
            name = main_name  # the same file: one adapter, two scales
        else:
            name = _fresh_name(tp, "guide")
            load_lora(tp, guide_lora, name, "--guide-lora")
        guide = Adapters.of({name: 1.0 if guide_lora_scale is None else guide_lora_scale})
    elif guide_lora_scale is not None:
        guide = Adapters.of({main_name: guide_lora_scale})
    set_text_encoder_adapters(tp, main)
    switch = AdapterSwitch(tp.network)
    switch.apply(main)
    main_view = AdapterView(tp.denoiser, switch, main)
    guide_view = AdapterView(tp.denoiser, switch, guide) if guide is not None else None
    return LoraSetup(main_view, guide_view, switch)


def _fresh_name(tp: TextPipeline, base: str) -> str:
    """An adapter name not yet used in the pipeline (views may be made more than once)."""
    used: set[str] = set()
    for part in (tp.network, *(getattr(tp.pipe, p, None) for p in ("text_encoder", "text_encoder_2"))):
        used.update(getattr(part, "peft_config", None) or {})
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}{k}"
    return name


def parameter_bytes(*modules: nn.Module) -> int:
    """Bytes of distinct parameter storage reachable from `modules` (shared storage counted once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            storage = p.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
