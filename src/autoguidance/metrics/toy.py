"""Exact metrics for the 2D toy: the data density is known, so quality and coverage are measured
against it directly rather than through features.

- outlier_fraction: share of samples with log p_A(x) < tau, tau the 1% quantile of log p_A over exact
  class-A samples (so the ground truth scores about 0.01 by construction).
- branch_tv: each sample goes to the branch of its most responsible class-A component; total variation
  between that histogram over the 127 branches and the branches' true masses. It sees coverage: a method
  that empties outer branches or branches near class B scores badly even if it has no outliers.
- mean_logp: the mean exact class-A log-density.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..toy.mixture import ToyMixture

CHUNK = 8192


def _chunks(x: torch.Tensor):
    for i in range(0, len(x), CHUNK):
        yield x[i : i + CHUNK]


def log_density(mixture: ToyMixture, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x; sigma = 0) in float64, (N,)."""
    return torch.cat([mixture.log_prob(c.double().cpu(), 0.0) for c in _chunks(x)])


def outlier_threshold(
    mixture: ToyMixture, num_samples: int = 2**20, seed: int = 0, quantile: float = 0.01
) -> float:
    """tau: the `quantile` of log p over `num_samples` exact samples drawn with a fixed seed."""
    x = mixture.sample(num_samples, 0.0, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return float(torch.quantile(log_density(mixture, x), quantile))


def assign_branches(mixture: ToyMixture, x: torch.Tensor) -> torch.Tensor:
    """Branch index (N,) of each sample's most responsible component (argmax of the posterior)."""
    return mixture.branch.cpu()[torch.cat([mixture.most_responsible(c.double().cpu()) for c in _chunks(x)])]


@dataclass(frozen=True)
class ToyMetrics:
    num_samples: int
    outlier_fraction: float
    branch_tv: float
    mean_logp: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def toy_metrics(mixture: ToyMixture, x: torch.Tensor, tau: float) -> ToyMetrics:
    """All three metrics for samples x (N, 2) against `mixture` (class A) and threshold tau."""
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"samples must have shape (N, 2), got {tuple(x.shape)}")
    logp = log_density(mixture, x)
    finite = torch.isfinite(x).all(dim=1)
    logp = torch.where(finite, logp, torch.full_like(logp, -torch.inf))  # a diverged sample is an outlier
    masses = mixture.component_masses(mixture.branch)
    counts = torch.bincount(
        assign_branches(mixture, torch.where(finite[:, None], x, 0.0)), minlength=len(masses)
    )
    hist = counts.double() / counts.sum()
    return ToyMetrics(
        num_samples=len(x),
        outlier_fraction=float((logp < tau).double().mean()),
        branch_tv=float(0.5 * (hist - masses).abs().sum()),
        mean_logp=float(logp[finite].mean()),
    )
