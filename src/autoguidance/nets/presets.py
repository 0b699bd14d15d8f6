"""Model size presets xxs / xs / s / m, scaled down from EDM2's for CPU training.

As in EDM2 (Table 1 of the autoguidance paper: XS guide for an S main model), sizes differ in width
only, so that a smaller preset is "the same model with less capacity", the paper's reduced-capacity
guide. Widths are far below EDM2's (128-256 at ImageNet-512) so that `s` at 32x32 trains on a 2-core CPU.

  resolution  levels      channel_mult  blocks  attention  model_channels (xxs, xs, s, m)
  8 (digits)  8, 4        (1, 2)        2       4x4        16, 24, 32, 48
  32 (MNIST)  32, 16, 8   (1, 2, 2)     1       8x8        8, 12, 16, 24
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserInputError
from .precond import NetConfig


@dataclass(frozen=True)
class _Layout:
    channel_mult: tuple[int, ...]
    num_blocks: int
    attn_resolutions: tuple[int, ...]
    widths: dict[str, int]


# Attention only at the lowest resolution: there it is cheap and adds global context (EDM2 B.7).
_LAYOUTS: dict[int, _Layout] = {
    8: _Layout((1, 2), 2, (4,), {"xxs": 16, "xs": 24, "s": 32, "m": 48}),
    # One block per level at 32x32: the full-resolution level dominates the cost.
    32: _Layout((1, 2, 2), 1, (8,), {"xxs": 8, "xs": 12, "s": 16, "m": 24}),
}

PRESET_NAMES: tuple[str, ...] = ("xxs", "xs", "s", "m")
PRESET_RESOLUTIONS: tuple[int, ...] = tuple(sorted(_LAYOUTS))


def preset_config(
    name: str, resolution: int, channels: int, label_dim: int, dropout: float = 0.0
) -> NetConfig:
    """The NetConfig of preset `name` for images of side `resolution` with `channels` channels.

    label_dim is the number of classes (0 = unconditional). Unknown names or resolutions raise
    `UserInputError` listing the valid ones; other values are checked by NetConfig.
    """
    if name not in PRESET_NAMES:
        raise UserInputError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}")
    if resolution not in _LAYOUTS:
        raise UserInputError(
            f"no model presets for resolution {resolution}; valid resolutions: "
            f"{', '.join(map(str, PRESET_RESOLUTIONS))}"
        )
    layout = _LAYOUTS[resolution]
    return NetConfig(
        img_resolution=resolution,
        img_channels=channels,
        label_dim=label_dim,
        model_channels=layout.widths[name],
        channel_mult=layout.channel_mult,
        num_blocks=layout.num_blocks,
        attn_resolutions=layout.attn_resolutions,
        dropout=dropout,
    )
