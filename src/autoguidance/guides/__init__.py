"""Guides made from the main network itself, without training (one implementation per degradation)."""

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
    "DropoutGuide",
    "InputNoiseGuide",
    "QuantizedGuide",
    "SkipBlocksGuide",
    "block_names",
    "weak_guide",
]
