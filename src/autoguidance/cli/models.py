"""The models a sampling command uses, from its options: main network, guide (a file, an EDM2 preset's or a
weak guide), unconditional network, precision and latent decoder; `generate` and `evaluate` share it.

Checked in two stages so that bad input costs nothing: `ModelOptions.check` (no file is read, nothing is
downloaded), then `ModelOptions.load` (a preset's files are downloaded once, networks are loaded). The
guided denoiser itself comes from `guidance.guided`, the one builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..denoiser import Denoiser
from ..errors import UserInputError
from ..guidance import check_interval, check_weight, guided
from ..guides import weak_guide
from ..images import check_png_channels
from ..io.cache import file_sha256
from ..io.edm2_presets import get_preset, resolve_preset
from ..io.networks import load_network
from ..nets.precond import EDM2Denoiser
from ..wrappers.latents import edm2_decoder
from ..wrappers.precision import LowPrecision, parse_dtype


def parse_weights(text: str) -> list[float]:
    """'2' or '1,1.5,2.1' -> guidance weights; UserInputError for non-numbers, NaN or negatives."""
    weights = []
    for part in text.split(","):
        try:
            w = float(part.strip())
        except ValueError:
            raise UserInputError(f"bad guidance weight {part.strip()!r}: expected a number") from None
        weights.append(check_weight(w))
    return weights


def parse_interval(text: str) -> tuple[float, float]:
    """'LO,HI' -> (lo, hi), the sigma interval (lo, hi] where the guide is used."""
    try:
        lo, hi = (float(p.strip()) for p in text.split(","))
    except ValueError:
        raise UserInputError(f"bad guidance interval {text!r}: expected LO,HI (two numbers)") from None
    checked = check_interval((lo, hi))
    assert checked is not None
    return checked


@dataclass(frozen=True)
class ModelOptions:
    """What the user asked for (`options.model_options`), as given on the command line."""

    net: str | None = None
    guide: str | None = None
    guidance: str | None = None
    interval: str | None = None
    uncond: str | None = None
    uncond_guidance: float = 1.0
    preset: str | None = None
    weak_guide: str | None = None
    weak_guide_seed: int = 0
    dtype: str = "fp32"
    vae: str | None = None

    def check(self) -> None:
        """Everything that needs no file: flags that need each other, numbers, the preset's name."""
        if self.uncond is None and self.uncond_guidance != 1.0:
            raise UserInputError("--uncond-guidance needs --uncond (the unconditional network)")
        if self.preset is not None:
            get_preset(self.preset)
        elif self.net is None:
            raise UserInputError(
                "give --net (a checkpoint or EDM2 pickle) or --preset (an EDM2 configuration)"
            )
        if self.weak_guide is not None and (self.guide is not None or self.preset is not None):
            raise UserInputError(
                "--weak-guide replaces --guide (and a preset's guide): give only one of them"
            )
        parse_dtype(self.dtype)
        has_guide = self.guide is not None or self.weak_guide is not None or self.preset is not None
        if self.guidance is not None:
            weights = parse_weights(self.guidance)
            if not has_guide and any(w != 1.0 for w in weights):
                raise UserInputError("--guidance needs --guide (the network to guide with)")
        elif has_guide and self.preset is None:
            raise UserInputError("--guide needs --guidance W (for example 2.0; 1 = no guidance)")
        if self.interval is not None:
            parse_interval(self.interval)
            if not has_guide:
                raise UserInputError("--interval needs --guide")

    def weights(self) -> list[float]:
        return parse_weights(self.guidance) if self.guidance is not None else [1.0]

    def interval_range(self) -> tuple[float, float] | None:
        return parse_interval(self.interval) if self.interval is not None else None

    def with_preset(self) -> tuple[ModelOptions, dict[str, Any] | None]:
        """These options with a preset's network, guide and weight filled in where the user left them
        out (its files downloaded once, or found in the cache), and a record of the preset."""
        if self.preset is None:
            return self, None
        p, net_file, guide_file = resolve_preset(self.preset)
        record = {"name": self.preset, "urls": list(p.urls()), "guidance": p.guidance, "published": p.paper}
        filled = ModelOptions(
            **{
                **self.__dict__,
                "net": self.net or str(net_file),
                "guide": self.guide or str(guide_file),
                "guidance": self.guidance if self.guidance is not None else f"{p.guidance:g}",
            }
        )
        return filled, record


@dataclass
class Models:
    """The loaded networks (on the device, in the asked precision), their metadata, and the decoder."""

    options: ModelOptions
    net: nn.Module
    meta: dict[str, Any]
    guide: nn.Module | None
    guide_meta: dict[str, Any] | None
    uncond: nn.Module | None
    uncond_meta: dict[str, Any] | None
    decode: Callable[[torch.Tensor], torch.Tensor] | None
    preset: dict[str, Any] | None = None

    @property
    def config(self):
        return self.net.config

    def denoiser(self, w: float) -> Denoiser:
        """The guided denoiser at weight `w` (the interval and CFG term as the options say)."""
        o = self.options
        return guided(
            self.net,
            self.guide,
            w,
            uncond=self.uncond,
            w_uncond=o.uncond_guidance,
            interval=o.interval_range(),
        )

    def image_size(self) -> int:
        """The images' side: a latent network's decoded size, or the training images' side before padding
        (train pads e.g. 28 to 32; generation crops back)."""
        resolution = self.config.img_resolution
        if self.decode is not None:
            return 8 * resolution
        size = self.meta.get("image_size")
        return size if isinstance(size, int) and 0 < size <= resolution else resolution

    def image_channels(self) -> int:
        return 3 if self.decode is not None else self.config.img_channels

    def provenance(self) -> dict[str, Any]:
        """Where every model came from (path, SHA-256, metadata), for the run's JSON record."""
        o = self.options
        return {
            "net": provenance(o.net, self.meta),
            "guide": provenance(o.guide, self.guide_meta) if o.guide else None,
            "weak_guide": {"spec": o.weak_guide, "seed": o.weak_guide_seed} if o.weak_guide else None,
            "uncond": provenance(o.uncond, self.uncond_meta) if o.uncond else None,
            "uncond_guidance": o.uncond_guidance if o.uncond else None,
            "preset": self.preset,
            "dtype": o.dtype,
        }


def provenance(path: str, meta: dict[str, Any] | None) -> dict[str, Any]:
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(Path(path)), "metadata": meta}


def load_models(options: ModelOptions, device: torch.device) -> Models:
    """Download a preset's files (once), load the networks and build the weak guide; every guide is
    checked against the main network (by building the guided denoiser at each weight)."""
    options, preset = options.with_preset()
    net, meta = load_network(options.net, device=device)
    guide, guide_meta = load_network(options.guide, device=device) if options.guide else (None, None)
    if options.weak_guide is not None:
        guide = weak_guide(net, options.weak_guide, options.weak_guide_seed)
    uncond, uncond_meta = load_network(options.uncond, device=device) if options.uncond else (None, None)
    net, guide, uncond = (_with_dtype(m, options.dtype) for m in (net, guide, uncond))
    decode = edm2_decoder(meta, options.vae, device)
    models = Models(options, net, meta, guide, guide_meta, uncond, uncond_meta, decode, preset)
    if decode is None:
        check_png_channels(models.config.img_channels)
    for w in options.weights():
        models.denoiser(w)
    return models


def _with_dtype(net: EDM2Denoiser | nn.Module | None, dtype: str) -> nn.Module | None:
    """The network run in --dtype (fp32: unchanged)."""
    dt = parse_dtype(dtype)
    if net is None or dt == torch.float32:
        return net
    return LowPrecision(net, dt)
