"""Exact metrics for the 2D toy: the data density is known, so quality and coverage are measured
against it directly rather than through features.

- outlier_fraction: share of samples with log p_A(x) < tau, tau the 1% quantile of log p_A over exact
  class-A samples (so the ground truth scores about 0.01 by construction).
- branch_tv: each sample goes to the branch of its most responsible class-A component; total variation
  between that histogram over the 127 branches and the branches' true masses. It mixes two things:
- depth_tv: the same TV over the 7 branch depths (where mass goes: truncation empties the outer depths),
  and outer_depth_ratio = sample mass / true mass at the outermost depth (1 = kept, 0 = emptied);
- within_depth_tv: sum over depths of (sample mass at d) x (TV between the samples' and the true branch
  shares inside d): reshuffling among branches of one depth. branch_tv <= depth_tv + within_depth_tv
  (triangle inequality), so the two parts bound it.
- recall, recall_outer: coverage in the sense of Kynkäänniemi et al. (2019): the share of exact reference
  samples that have a generated sample within their own k-NN radius (among the reference samples),
  over all reference samples and over those on outermost-depth branches.
- mean_logp: the mean exact class-A log-density.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from .mixture import NUM_DEPTHS, ToyMixture

CHUNK = 8192
RECALL_K = 5
OUTER_DEPTH = NUM_DEPTHS - 1


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
class RecallReference:
    """Exact reference samples, their k-NN radii among themselves and whether each is on an outer branch."""

    points: np.ndarray
    radii: np.ndarray
    outer: np.ndarray

    @classmethod
    def build(cls, mixture: ToyMixture, num_samples: int, seed: int, k: int = RECALL_K) -> RecallReference:
        x = mixture.sample(num_samples, 0.0, torch.Generator().manual_seed(seed), dtype=torch.float64)
        points = x.numpy()
        dist, _ = cKDTree(points).query(points, k=k + 1)  # the nearest is the point itself
        depth = mixture.depth.cpu()[torch.cat([mixture.most_responsible(c) for c in _chunks(x)])]
        return cls(points, dist[:, k], (depth == OUTER_DEPTH).numpy())

    def covered(self, samples: np.ndarray) -> np.ndarray:
        """Per reference point: does some sample lie within its k-NN radius?"""
        if len(samples) == 0:
            return np.zeros(len(self.points), dtype=bool)
        dist, _ = cKDTree(samples).query(self.points, k=1)
        return dist <= self.radii


@dataclass(frozen=True)
class ToyMetrics:
    num_samples: int
    outlier_fraction: float
    branch_tv: float
    depth_tv: float
    within_depth_tv: float
    outer_depth_ratio: float
    recall: float
    recall_outer: float
    mean_logp: float
    depth_mass: list[float]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def depth_split(hist: torch.Tensor, masses: torch.Tensor, depth_of_branch: torch.Tensor):
    """(depth_tv, within_depth_tv, sample mass per depth, true mass per depth) of a branch histogram."""
    h_d = torch.zeros(NUM_DEPTHS, dtype=torch.float64).index_add_(0, depth_of_branch, hist)
    m_d = torch.zeros(NUM_DEPTHS, dtype=torch.float64).index_add_(0, depth_of_branch, masses)
    within = 0.0
    for d in range(NUM_DEPTHS):
        sel = depth_of_branch == d
        if h_d[d] > 0:
            within += float(h_d[d] * 0.5 * (hist[sel] / h_d[d] - masses[sel] / m_d[d]).abs().sum())
    return float(0.5 * (h_d - m_d).abs().sum()), within, h_d, m_d


def toy_metrics(
    mixture: ToyMixture, x: torch.Tensor, tau: float, reference: RecallReference | None = None
) -> ToyMetrics:
    """All metrics for samples x (N, 2) against `mixture` (class A) and threshold tau; recall needs an
    exact `reference` set (NaN without one)."""
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
    depth_of_branch = torch.zeros(len(masses), dtype=torch.int64).index_put_(
        (mixture.branch.cpu(),), mixture.depth.cpu()
    )
    depth_tv, within, h_d, m_d = depth_split(hist, masses, depth_of_branch)
    recall = recall_outer = float("nan")
    if reference is not None:
        hit = reference.covered(x[finite].double().cpu().numpy())
        recall, recall_outer = float(hit.mean()), float(hit[reference.outer].mean())
    return ToyMetrics(
        num_samples=len(x),
        outlier_fraction=float((logp < tau).double().mean()),
        branch_tv=float(0.5 * (hist - masses).abs().sum()),
        depth_tv=depth_tv,
        within_depth_tv=within,
        outer_depth_ratio=float(h_d[OUTER_DEPTH] / m_d[OUTER_DEPTH]),
        recall=recall,
        recall_outer=recall_outer,
        mean_logp=float(logp[finite].mean()) if finite.any() else float("-inf"),
        depth_mass=[round(float(v), 6) for v in h_d],
    )


def true_depth_mass(mixture: ToyMixture) -> list[float]:
    """The exact mass per branch depth (what depth_mass should be)."""
    m = torch.zeros(NUM_DEPTHS, dtype=torch.float64).index_add_(0, mixture.depth.cpu(), mixture.weights)
    return [round(float(v), 6) for v in m]
