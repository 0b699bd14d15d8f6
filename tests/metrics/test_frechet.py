"""Frechet distance: zero for a set with itself, the closed form for Gaussians, independent of order and
batching, streaming equal to one-shot, and the sums reduced across processes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from autoguidance.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_gaussians

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_set_with_itself_is_zero():
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
    s = FeatureStats.of(x)
    assert abs(frechet_distance(s, s)) < 1e-8


def test_diagonal_closed_form():
    # Commuting covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance_gaussians(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_samples_approach_the_gaussians_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    exact = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    errors = []
    for n in (1_000, 100_000):
        x = rng.multivariate_normal(mu1, s1, size=n)
        y = rng.multivariate_normal(mu2, s2, size=n)
        fd = frechet_distance(FeatureStats.of(torch.from_numpy(x)), FeatureStats.of(torch.from_numpy(y)))
        errors.append(abs(fd - exact))
    assert errors[1] < 0.02 * exact  # estimation error shrinks like 1 / sqrt(n) (and the bias like 1 / n)
    assert errors[1] < errors[0]


def test_independent_of_order_and_batch_size_and_streaming_equals_one_shot():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 8, generator=g) @ torch.randn(8, 8, generator=g)
    y = torch.randn(300, 8, generator=g) + 0.5
    ref = FeatureStats.of(y)
    one_shot = frechet_distance_gaussians(
        x.double().mean(0).numpy(), np.cov(x.double().numpy(), rowvar=False, ddof=1), ref.mean, ref.cov
    )
    for batch in (1, 7, 64, 500):
        for perm in (torch.arange(500), torch.randperm(500, generator=g)):
            s = FeatureStats(8)
            for start in range(0, 500, batch):
                s.update(x[perm[start : start + batch]])
            assert s.count == 500
            assert frechet_distance(s, ref) == pytest.approx(one_shot, rel=1e-9, abs=1e-9)


def test_covariance_divides_by_n_minus_1():
    x = torch.tensor([[0.0], [2.0]])
    assert FeatureStats.of(x).cov[0, 0] == pytest.approx(2.0)  # ((0-1)^2 + (2-1)^2) / (2 - 1)


def test_mismatched_dimensions_are_refused():
    with pytest.raises(ValueError):
        FeatureStats(3).update(torch.zeros(2, 4))
    with pytest.raises(ValueError):
        frechet_distance_gaussians(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
