"""Per-sample seeded randomness: each sample owns a generator seeded by its own seed.

A sample then comes out the same whatever the batch it is in, the batch size or the number of processes
(EDM2's convention). Draws happen in a fixed order per sample: initial noise, then class label, then
churn noise, step by step.

The generators live on the device that uses the noise (`device`), so that no noise crosses the bus and
the host does not generate it while the accelerator waits: one small kernel per sample. On the CPU the
normals are drawn in float64 and rounded to float32 (the streams of earlier versions, kept so that seeds
give the images they always gave); on CUDA they are drawn in float32 from CUDA's own generator, so a seed
gives a different (equally valid) sample on a GPU than on a CPU, but the same on every GPU run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from .errors import UserInputError

MAX_SEED = 2**63 - 1


def parse_seeds(text: str) -> list[int]:
    """Parse '0-63', '5', '0-3,10,20-21' into a sorted list of distinct seeds; UserInputError if malformed."""
    seeds: set[int] = set()
    text = text.strip()
    if not text:
        raise UserInputError("empty seed list")
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise UserInputError(f"bad seed range {part!r}: expected N or A-B with 0 <= A <= B")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserInputError(f"bad seed range {part!r}: end {hi} is before start {lo}")
        if hi > MAX_SEED:
            raise UserInputError(f"bad seed range {part!r}: seeds must be below 2^63")
        if hi - lo > 10_000_000:
            raise UserInputError(f"bad seed range {part!r}: more than 10 million seeds")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


class SeedStreams:
    """One torch.Generator per sample, on `device`. Draws return stacked (B, ...) tensors."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None):
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device if device is not None else "cpu")
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def _draw(self, fn, shape: Sequence[int], device, dtype: torch.dtype) -> torch.Tensor:
        draw_dtype = torch.float64 if self.device.type == "cpu" else dtype
        out = torch.stack(
            [fn(tuple(shape), generator=g, dtype=draw_dtype, device=self.device) for g in self.generators]
        )
        return out.to(device=device if device is not None else self.device, dtype=dtype)

    def randn(self, shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
        """Standard normals, (B, *shape), on `device` (default: the generators' device)."""
        return self._draw(torch.randn, shape, device, dtype)

    def rand(self, shape: Sequence[int] = (), device=None, dtype=torch.float32) -> torch.Tensor:
        """Uniform [0, 1) draws, (B, *shape)."""
        return self._draw(torch.rand, shape, device, dtype)

    def randint(self, high: int, device=None) -> torch.Tensor:
        out = torch.cat([torch.randint(high, (1,), generator=g, device=self.device) for g in self.generators])
        return out.to(device if device is not None else self.device)
