"""Precision and recall of k-nearest-neighbour manifolds, and density and coverage, in any feature space.

Improved precision and recall (Kynkaanniemi et al. 2019, eqs. 1-3): each feature vector's ball has as
radius the distance to its k-th nearest neighbour within its own set (k = 3). A generated sample is
inside the real manifold if it lies in some real sample's ball; precision is the share of generated
samples inside the real manifold, recall the share of real samples inside the generated manifold.
Density and coverage (Naeem et al. 2020, eqs. 3-4) reuse the real balls: density counts, per generated
sample, how many real balls hold it (divided by k, averaged), coverage is the share of real balls that
hold at least one generated sample.

Distances are Euclidean in float64, in blocks of rows so that memory stays O(block x N).
"""

from __future__ import annotations

import torch

BLOCK = 1024


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) distance from each row of x (N, D) to its k-th nearest other row."""
    if not 1 <= k < len(x):
        raise ValueError(f"need 1 <= k < number of samples, got k={k}, N={len(x)}")
    out = []
    for start in range(0, len(x), BLOCK):
        d = _cdist(x[start : start + BLOCK], x)
        # The k + 1 smallest include the row itself (distance 0).
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(out)


def _ball_counts(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(P,) number of balls (centres (C, D), radii (C,)) that hold each of points (P, D)."""
    counts = []
    for start in range(0, len(points), BLOCK):
        d = _cdist(points[start : start + BLOCK], centres)
        counts.append((d <= radii[None, :]).sum(1))
    return torch.cat(counts)


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Precision, recall (k-NN manifolds), density and coverage of `fake` (M, D) against `real` (N, D).

    A set against itself gives precision = recall = coverage = 1 (every point lies in its own ball).
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {tuple(real.shape)} and {tuple(fake.shape)}")
    real = real.to(torch.float64)
    fake = fake.to(torch.float64)
    real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    in_real = _ball_counts(fake, real, real_radii)  # per generated sample: real balls holding it
    in_fake = _ball_counts(real, fake, fake_radii)  # per real sample: generated balls holding it
    # Coverage: per real ball, is its nearest generated sample inside it?
    nearest_fake = torch.cat(
        [_cdist(real[s : s + BLOCK], fake).min(1).values for s in range(0, len(real), BLOCK)]
    )
    return {
        "precision": float((in_real > 0).double().mean()),
        "recall": float((in_fake > 0).double().mean()),
        "density": float(in_real.double().sum() / (k * len(fake))),
        "coverage": float((nearest_fake <= real_radii).double().mean()),
    }
