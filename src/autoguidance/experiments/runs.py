"""The trained models the paper's experiments need, trained on demand with the package's training loop
and cached as run folders (a rerun finds them finished; a killed training resumes).

Durations are fractions of the main model's training length T. Names:

  s            main model: preset s, class-conditional, T
  xs           guide family: preset xs, conditional, T/2, snapshots every T/32, so that its post-hoc EMA
               reconstructions at T/32, T/16, T/8, T/4 and T/2 are guides of those training times
  xxs          reduced capacity: preset xxs, conditional, T/8
  xs-full      "reduced capacity only": preset xs, conditional, T
  xs-uncond    classifier-free guidance's guide: preset xs, unconditional, T/4
  s-uncond     unconditional main model: preset s, unconditional, T
  xs-uncond-g  its autoguidance guide: preset xs, unconditional, T/8

A user's existing run can stand in for any of them (`Setup.overrides`); it is used as it is, never
trained further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import UserInputError
from ..training.loop import TrainConfig, train

# name -> (preset, conditional, fraction of T, snapshot interval as a fraction of T)
CATALOG: dict[str, tuple[str, bool, Fraction, Fraction]] = {
    "s": ("s", True, Fraction(1), Fraction(1, 20)),
    "xs": ("xs", True, Fraction(1, 2), Fraction(1, 32)),
    "xxs": ("xxs", True, Fraction(1, 8), Fraction(1, 32)),
    "xs-full": ("xs", True, Fraction(1), Fraction(1, 16)),
    "xs-uncond": ("xs", False, Fraction(1, 4), Fraction(1, 40)),
    "s-uncond": ("s", False, Fraction(1), Fraction(1, 20)),
    "xs-uncond-g": ("xs", False, Fraction(1, 8), Fraction(1, 32)),
}


@dataclass
class Setup:
    """Where an experiment keeps its models, store and results, and how long the main model trains."""

    out: Path
    dataset: str = "mnist"
    duration: int = 327_680  # T, in images (the MNIST s model of results/README.md)
    batch: int = 64
    overrides: dict[str, Path] = field(default_factory=dict)
    device: str | None = None
    progress: bool = False

    def __post_init__(self):
        self.out = Path(self.out)
        unknown = sorted(set(self.overrides) - set(CATALOG))
        if unknown:
            raise UserInputError(f"unknown model names {unknown}; known: {', '.join(CATALOG)}")
        for name, path in self.overrides.items():
            if not Path(path).is_dir():
                raise UserInputError(f"run {name}={path}: no such training run folder")
        if self.duration < 32 * self.batch:
            raise UserInputError(
                f"the main model's duration must be at least 32 batches, got {self.duration}"
            )

    def images(self, fraction: Fraction) -> int:
        """fraction * T rounded to whole batches (snapshots fall on batch boundaries)."""
        return max(1, round(fraction * self.duration / self.batch)) * self.batch

    def train_config(self, name: str) -> TrainConfig:
        preset, cond, frac, snap = CATALOG[name]
        return TrainConfig(
            dataset=self.dataset,
            preset=preset,
            cond=cond,
            batch_size=self.batch,
            duration=self.images(frac),
            snapshot_every=self.images(snap),
            checkpoint_every=self.images(Fraction(1, 8)),
            seed=1 + list(CATALOG).index(name),
        )

    def run(self, name: str) -> Path:
        """The run folder of model `name`, trained (or its training resumed) first if needed."""
        if name not in CATALOG:
            raise UserInputError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
        if name in self.overrides:
            return Path(self.overrides[name]).resolve()
        folder = self.out / "runs" / name
        result = train(self.train_config(name), folder, progress=self.progress, device=self.device)
        if not result.finished:
            raise UserInputError(f"training of {name} in {folder} did not finish")
        return folder.resolve()
