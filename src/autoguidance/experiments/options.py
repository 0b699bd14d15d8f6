"""Options shared by the paper's experiments: sampling settings and the grids each one sweeps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..sweeps.models import ModelCache


@dataclass
class Options:
    """What every configuration of an experiment shares, and the grids it sweeps.

    steps / samples: Heun steps and images per configuration (all from seeds seed0 ...: common random
    numbers); metric: the store's value. ws: guidance weights; ema_main / ema_guide: post-hoc EMA
    lengths; the best over these is each row's "best settings". guide_time: the guide's training time
    as a fraction of T; interval: CFG's guidance interval (sigma_lo, sigma_hi]."""

    steps: int = 16
    samples: int = 1000
    seed0: int = 0
    metric: str = "fd_classifier"
    ws: list[float] = field(default_factory=lambda: [1.5, 2.0, 2.5, 3.0])
    ema_main: list[float] = field(default_factory=lambda: [0.07])
    ema_guide: list[float] = field(default_factory=lambda: [0.125])
    guide_time: Fraction = Fraction(1, 8)
    interval: list[float] = field(default_factory=lambda: [0.28, 2.9])
    rows: list[str] | None = None  # experiment-specific subset (e.g. table1 rows); None: all

    def __post_init__(self):
        for name in ("ws", "ema_main", "ema_guide"):
            if not getattr(self, name):
                raise UserInputError(f"empty grid: {name.replace('_', '-')} needs at least one value")

    def base(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "seed0": self.seed0}


def snapshot_at(models: ModelCache, run, images: int) -> int:
    """`images` if the run has a snapshot there, else a one-line error listing what it has."""
    times = models.snapshot_times(run)
    if images not in times:
        raise UserInputError(
            f"run {run} has no snapshot at {images} training images (has {times[0]} ... {times[-1]}, "
            f"{len(times)} times): train it with snapshots every T/32 (the catalog's xs) or pick another time"
        )
    return images


def nearest_snapshot(models: ModelCache, run, images: int) -> int:
    """The run's snapshot time closest to `images` (for runs whose snapshots do not fall on T/2^k)."""
    return min(models.snapshot_times(run), key=lambda t: (abs(t - images), t))


def run_label(models: ModelCache, run, duration: int) -> str:
    """'XS, T/8': a run's preset and its training length (its last snapshot) as a fraction of T, so that
    rows from guides of other lengths (a user's --run) are never pooled under one label."""
    config = Path(run) / "training-config.json"
    preset = json.loads(config.read_text()).get("preset", "?") if config.is_file() else "?"
    trained = models.snapshot_times(run)[-1]
    return f"{str(preset).upper()}, {fraction_label(Fraction(trained, duration))}"


def fraction_label(f: Fraction) -> str:
    return "T" if f == 1 else f"T/{int(1 / f)}" if f.numerator == 1 else f"{f}T"


def wanted(opts: Options, row: str) -> bool:
    return opts.rows is None or row in opts.rows


def product(base: dict, **lists) -> list[dict]:
    """base merged with every combination of the given field: values lists."""
    import itertools

    names = list(lists)
    return [{**base, **dict(zip(names, vals, strict=True))} for vals in itertools.product(*lists.values())]
