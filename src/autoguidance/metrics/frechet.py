"""Frechet distance between Gaussian fits of two feature sets (FID, FD_DINOv2, fd_classifier).

    FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))          (Heusel et al. 2017, eq. 6)

`FeatureStats` accumulates the count, the sum of features and the sum of their outer products in float64,
batch by batch, so that any number of images fits in memory and the result does not depend on batch
size; under torchrun the three sums are added across processes. The covariance uses N - 1 (the unbiased
estimate, as the published protocol does); the matrix square root is scipy.linalg.sqrtm, of which the
real part is kept (S_1 S_2 has real non-negative eigenvalues in exact arithmetic; rounding adds tiny
imaginary parts).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import distributed as dist


class FeatureStats:
    """Streaming first and second moments of (N, D) features, accumulated in float64."""

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sum_outer = torch.zeros((dim, dim), dtype=torch.float64)

    @classmethod
    def of(cls, features: torch.Tensor) -> FeatureStats:
        stats = cls(features.shape[1])
        stats.update(features)
        return stats

    def update(self, features: torch.Tensor) -> None:
        """Add a batch (n, D) of features."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features (n, {self.dim}), got {tuple(features.shape)}")
        x = features.detach().to("cpu", torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.sum_outer += x.T @ x

    def all_reduce(self) -> None:
        """Add the sums of every process (a collective: every rank calls it; gloo or CPU-capable group)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        count = torch.tensor([self.count], dtype=torch.float64)
        for t in (count, self.sum, self.sum_outer):
            dist.all_reduce(t)
        self.count = int(count.item())

    @property
    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("no features accumulated")
        return (self.sum / self.count).numpy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by N - 1): (sum x x^T - N mu mu^T) / (N - 1)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 features, got {self.count}")
        mu = self.sum / self.count
        cov = (self.sum_outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return cov.numpy()


def frechet_distance_gaussians(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.asarray(covmean).real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance_gaussians(a.mean, a.cov, b.mean, b.cov)
