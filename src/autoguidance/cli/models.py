"""What `generate` needs from interop, so that the command stays a thin shell: EDM2 presets filled into
its options, training-free guides, reduced precision and latent decoding."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from ..guides.weak import weak_guide
from ..io.edm2_presets import get_preset, resolve_preset
from ..wrappers.precision import LowPrecision, parse_dtype


def check_options(
    preset: str | None,
    net_path: str | None,
    guide_path: str | None,
    weak: str | None,
    dtype: str,
    uncond_path: str | None = None,
    uncond_guidance: float = 1.0,
) -> None:
    """Cheap checks before anything is loaded or downloaded."""
    if uncond_path is None and uncond_guidance != 1.0:
        raise UserInputError("--uncond-guidance needs --uncond (the unconditional network)")
    if preset is not None:
        get_preset(preset)
    if preset is None and net_path is None:
        raise UserInputError("give --net (a checkpoint or EDM2 pickle) or --preset (an EDM2 configuration)")
    if weak is not None and (guide_path is not None or preset is not None):
        raise UserInputError("--weak-guide replaces --guide (and a preset's guide): give only one of them")
    parse_dtype(dtype)


def apply_preset(
    preset: str | None, net_path: str | None, guide_path: str | None, guidance: str | None
) -> tuple[str | None, str | None, str | None, dict[str, Any] | None]:
    """Fill --net, --guide and --guidance from an EDM2 preset where the user left them out; downloads
    (or finds in the cache) the published files. Returns the options and a record for the metadata."""
    if preset is None:
        return net_path, guide_path, guidance, None
    p, net_file, guide_file = resolve_preset(preset)
    record = {"name": preset, "urls": list(p.urls()), "guidance": p.guidance, "published": p.paper}
    return (
        net_path or str(net_file),
        guide_path or str(guide_file),
        guidance if guidance is not None else f"{p.guidance:g}",
        record,
    )


def derive_guide(net: nn.Module, spec: str | None, seed: int) -> nn.Module | None:
    """The --weak-guide KIND:VALUE guide built from the main network, or None."""
    return None if spec is None else weak_guide(net, spec, seed)


def with_dtype(net: nn.Module | None, dtype: str) -> nn.Module | None:
    """The network run in --dtype (fp32: unchanged)."""
    dt = parse_dtype(dtype)
    if net is None or dt == torch.float32:
        return net
    return LowPrecision(net, dt)
