"""Guides made from the main network itself, without training (one implementation per degradation)."""

from .attention import AttentionTemperatureGuide, self_attentions
from .weak import (
    WEAK_GUIDE_KINDS,
    DropoutGuide,
    InputNoiseGuide,
    QuantizedGuide,
    SkipBlocksGuide,
    block_names,
    weak_guide,
)

__all__ = [
    "WEAK_GUIDE_KINDS",
    "AttentionTemperatureGuide",
    "DropoutGuide",
    "InputNoiseGuide",
    "QuantizedGuide",
    "SkipBlocksGuide",
    "block_names",
    "self_attentions",
    "weak_guide",
]
