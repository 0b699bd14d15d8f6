"""Per-sample training randomness keyed by (seed, step, position in the global batch).

Every sample of global batch `step` gets its own CPU generator whose seed is a hash of (seed, step, j),
j in [0, batch_size) its position in the global batch. Its draws (noise image, then the normal behind
ln sigma) are therefore the same whether the batch is processed by one process or split across several,
and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..seeds import SeedStreams

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One round of the splitmix64 finaliser: a fixed bijection on 64-bit ints that mixes all bits."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


# Separate hash domains, so that the seeds of different kinds of randomness never coincide.
DOMAIN_SAMPLE = 0  # noise image and sigma of one sample
DOMAIN_DROPOUT = 1  # torch's global generator for dropout, per (step, rank)


def sample_seed(seed: int, step: int, position: int, domain: int = DOMAIN_SAMPLE) -> int:
    """A 63-bit generator seed for sample `position` of global batch `step` of a run seeded `seed`."""
    h = _splitmix64(_splitmix64(domain & _MASK64) ^ (seed & _MASK64))
    h = _splitmix64(h ^ (step & _MASK64))
    h = _splitmix64(h ^ (position & _MASK64))
    return h >> 1  # torch seeds must fit a signed 64-bit int


def training_noise(
    seed: int, step: int, positions: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images (B, *shape) ~ N(0, I) and standard normals (B,) for the samples at `positions` (B,).

    Drawn on `device` from per-sample generators (seeds.SeedStreams: independent of batching and process
    count; a CPU and a GPU run draw different streams), returned as float32.
    """
    streams = SeedStreams([sample_seed(seed, step, int(p)) for p in positions], device=device)
    noise = streams.randn(shape)  # first draw: the noise image
    normal = streams.randn(())  # second draw: ln sigma's standard normal
    return noise, normal
