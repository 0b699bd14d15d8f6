"""Model size presets xxs / xs / s / m for any square resolution, derived by one rule, scaled down from
EDM2's for CPU training.

As in EDM2 (Table 1 of the autoguidance paper: XS guide for an S main model), sizes differ in width
only, so that a smaller preset is "the same model with less capacity", the paper's reduced-capacity
guide. Widths are far below EDM2's (128-256 at ImageNet-512) so that `s` at 32x32 trains on a 2-core CPU.

The rule, for a resolution R that is a power of two >= 8 (other sizes are padded up to the next one,
`padded_resolution`; e.g. 28 -> 32):

  levels          R, R/2, ... down to 8x8 (down to 4x4 for R = 8)
  channel_mult    1 at full resolution, 2 at every lower level
  blocks          1 per level (2 for R = 8): the full-resolution level dominates the cost
  attention       at the lowest level only: cheap there, and it adds global context (EDM2 App. B.7)
  model_channels  xxs, xs, s, m = 8, 12, 16, 24 (16, 24, 32, 48 for R = 8, whose levels are tiny)

  resolution  levels            channel_mult   blocks  attention
  8           8, 4              (1, 2)         2       4
  16          16, 8             (1, 2)         1       8
  32          32, 16, 8         (1, 2, 2)      1       8
  64          64, 32, 16, 8     (1, 2, 2, 2)   1       8

Every field can also be set directly (`ArchitectureOverrides`, the train command's --channels,
--channel-mult, --blocks and --attn) for shapes the rule does not cover.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserInputError
from .precond import NetConfig

PRESET_NAMES: tuple[str, ...] = ("xxs", "xs", "s", "m")
_WIDTHS_8 = {"xxs": 16, "xs": 24, "s": 32, "m": 48}  # R = 8
_WIDTHS = {"xxs": 8, "xs": 12, "s": 16, "m": 24}  # R >= 16
MIN_RESOLUTION = 8


@dataclass(frozen=True)
class ArchitectureOverrides:
    """Fields that replace the preset's choice when not None (the names are NetConfig's)."""

    model_channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    num_blocks: int | None = None
    attn_resolutions: tuple[int, ...] | None = None

    def given(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def is_preset_resolution(resolution: int) -> bool:
    """A power of two >= 8: it halves down to 4x4 or 8x8."""
    return resolution >= MIN_RESOLUTION and resolution & (resolution - 1) == 0


def padded_resolution(size: int) -> int:
    """The smallest preset resolution >= size (28 -> 32, 8 -> 8, 5 -> 8)."""
    if size < 1:
        raise UserInputError(f"image size must be >= 1, got {size}")
    r = MIN_RESOLUTION
    while r < size:
        r *= 2
    return r


def preset_layout(resolution: int) -> dict:
    """channel_mult, num_blocks and attn_resolutions of the rule above for a preset resolution."""
    if not is_preset_resolution(resolution):
        raise UserInputError(
            f"no model preset for resolution {resolution}: presets exist for powers of two >= 8 "
            f"(8, 16, 32, 64, ...); pad the images to {padded_resolution(resolution)} or set the "
            "architecture directly"
        )
    lowest = 4 if resolution == 8 else 8
    levels = resolution.bit_length() - lowest.bit_length() + 1  # R, R/2, ..., lowest
    return {
        "channel_mult": (1,) + (2,) * (levels - 1),
        "num_blocks": 2 if resolution == 8 else 1,
        "attn_resolutions": (lowest,),
    }


def preset_config(
    name: str,
    resolution: int,
    channels: int,
    label_dim: int,
    dropout: float = 0.0,
    overrides: ArchitectureOverrides | None = None,
) -> NetConfig:
    """The NetConfig of preset `name` for images of side `resolution` with `channels` channels.

    label_dim is the number of classes (0 = unconditional). `overrides` replace single fields; with all
    four given, the resolution need not be a preset resolution. Unknown names or resolutions raise
    `UserInputError` listing the valid ones; other values are checked by NetConfig.
    """
    if name not in PRESET_NAMES:
        raise UserInputError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}")
    given = (overrides or ArchitectureOverrides()).given()
    if len(given) == 4:
        layout: dict = {}
    else:
        layout = preset_layout(resolution)
        layout["model_channels"] = (_WIDTHS_8 if resolution == 8 else _WIDTHS)[name]
    layout.update(given)
    return NetConfig(
        img_resolution=resolution,
        img_channels=channels,
        label_dim=label_dim,
        dropout=dropout,
        **layout,
    )
