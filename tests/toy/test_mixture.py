"""The toy mixture against its own closed forms: construction, score = grad log p, moments, diffusion."""

import math

import numpy as np
import pytest
import torch

from autoguidance.seeds import SeedStreams
from autoguidance.toy.mixture import ToyMixture, build_spec


@pytest.fixture(scope="module")
def class_a():
    return ToyMixture((0,))


def test_construction_matches_the_paper_layout():
    spec = build_spec()
    a = spec.labels == 0
    assert a.sum() == 1016 and (~a).sum() == 1016
    assert len(np.unique(spec.branches[a])) == 127
    assert np.bincount(spec.depths[a]).tolist() == [8 * 2**d for d in range(7)]
    # Root branches start at the origin (times scale) and point along pi/4 (A) and 5 pi/4 (B).
    for label, angle in ((0, math.pi / 4), (1, 5 * math.pi / 4)):
        first = spec.means[(spec.labels == label)][:8]
        direction = first[-1] - first[0]
        direction /= np.array([1.3136, 1.3844])
        assert math.isclose(
            math.atan2(direction[1], direction[0]) % (2 * math.pi), angle % (2 * math.pi), abs_tol=1e-9
        )
    # Covariances are symmetric positive definite.
    assert np.all(np.linalg.eigvalsh(spec.covs) > 0)


@pytest.mark.parametrize(
    "label, first, last, mean_of_means, weight_sum",
    [
        (0, (0.02134411, 0.06333431), (0.48176389, -0.59655977), (0.54898255, 0.50334651), 8.325511702135294),
        (
            1,
            (-0.01454499, 0.02551087),
            (-0.4932548, 0.55852667),
            (-0.4873019, -0.52285148),
            9.127986588864774,
        ),
    ],
)
def test_construction_matches_the_reference_draw_order(label, first, last, mean_of_means, weight_sum):
    # Fingerprints of the paper's reference construction (float64, after the per-axis scale): they hold
    # only if every last-depth branch still draws its two children's angles.
    spec = build_spec()
    keep = spec.labels == label
    means = spec.means[keep]
    np.testing.assert_allclose(means[0], first, atol=1e-8, rtol=0)
    np.testing.assert_allclose(means[-1], last, atol=1e-8, rtol=0)
    np.testing.assert_allclose(means.mean(axis=0), mean_of_means, atol=1e-8, rtol=0)
    assert spec.weights[keep].sum() == pytest.approx(weight_sum, abs=1e-8)


def test_construction_is_deterministic():
    a, b = build_spec(), build_spec()
    assert np.array_equal(a.means, b.means) and np.array_equal(a.covs, b.covs)


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.3, 5.0])
def test_score_is_gradient_of_log_density(class_a, sigma):
    x = class_a.sample(64, 0.2, torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    logp = class_a.log_prob(x, sigma)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    kernel_logp, kernel_score = class_a.log_prob_and_score(x.detach(), sigma)
    torch.testing.assert_close(kernel_score, grad, rtol=1e-6, atol=1e-9 / max(sigma, 0.01) ** 2)
    torch.testing.assert_close(kernel_logp, logp.detach(), rtol=1e-10, atol=1e-10)


def test_float32_kernel_agrees_with_float64(class_a):
    g = torch.Generator().manual_seed(1)
    x = class_a.sample(512, 0.0, g, dtype=torch.float64)
    sigma = torch.exp(-2.3 + 1.5 * torch.randn(512, generator=g, dtype=torch.float64))
    x = x + sigma[:, None] * torch.randn(512, 2, generator=g, dtype=torch.float64)
    lp64, s64 = class_a.log_prob_and_score(x, sigma)
    lp32, s32 = class_a.log_prob_and_score(x.float(), sigma.float())
    assert (lp32.double() - lp64).abs().max() < 1e-3
    rel = (s32.double() - s64).norm(dim=1) / s64.norm(dim=1).clamp_min(1e-3)
    assert rel.max() < 2e-3


def test_density_integrates_to_one(class_a):
    # Riemann sum over a grid that holds all the mass at sigma = 0.05.
    n = 500
    xs = torch.linspace(-2, 2, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    mass = class_a.log_prob(pts, 0.05).exp().sum() * (4 / (n - 1)) ** 2
    assert abs(float(mass) - 1) < 2e-3


def test_samples_match_mixture_moments(class_a):
    x = class_a.sample(400_000, 0.0, torch.Generator().manual_seed(2), dtype=torch.float64)
    w = class_a.weights
    mean = (w[:, None] * class_a.means).sum(0)
    second = (w[:, None, None] * (class_a.covs + class_a.means[:, :, None] * class_a.means[:, None, :])).sum(
        0
    )
    cov = second - mean[:, None] * mean[None, :]
    torch.testing.assert_close(x.mean(0), mean, atol=3e-3, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=3e-3, rtol=0)


def test_heat_diffusion_matches_sampling_at_sigma(class_a):
    """p(x; sigma) is the clean density convolved with N(0, sigma^2 I): compare the closed form with a
    Monte Carlo average of the Gaussian kernel over exact clean samples."""
    sigma = 0.15
    y = class_a.sample(400_000, 0.0, torch.Generator().manual_seed(3), dtype=torch.float64)
    probes = class_a.sample(6, sigma, torch.Generator().manual_seed(4), dtype=torch.float64)
    d2 = ((probes[:, None, :] - y[None]) ** 2).sum(-1)
    mc = (torch.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)).mean(1)
    exact = class_a.log_prob(probes, sigma).exp()
    torch.testing.assert_close(mc, exact, rtol=0.03, atol=0)
    # And samples drawn at sigma have the diffused covariance Sigma + sigma^2 I.
    noisy = class_a.sample(400_000, sigma, torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(
        torch.cov(noisy.T), torch.cov(y.T) + sigma**2 * torch.eye(2, dtype=torch.float64), atol=4e-3, rtol=0
    )


def test_exact_denoiser_is_posterior_mean(class_a):
    # E[y | x] computed by importance weighting of clean samples against the closed-form denoiser.
    sigma = 0.2
    y = class_a.sample(400_000, 0.0, torch.Generator().manual_seed(6), dtype=torch.float64)
    x = torch.tensor([[0.3, 0.4], [0.5, 0.9]], dtype=torch.float64)
    w = torch.softmax(-((x[:, None] - y[None]) ** 2).sum(-1) / (2 * sigma**2), dim=1)
    torch.testing.assert_close(
        class_a.denoise(x, torch.full((2,), sigma, dtype=torch.float64)), w @ y, atol=5e-3, rtol=0
    )


def test_seeded_samples_do_not_depend_on_batch(class_a):
    whole = class_a.sample_seeded(SeedStreams(range(10, 20)), sigma=5.0)
    parts = torch.cat(
        [
            class_a.sample_seeded(SeedStreams(range(10, 13)), sigma=5.0),
            class_a.sample_seeded(SeedStreams(range(13, 20)), sigma=5.0),
        ]
    )
    assert torch.equal(whole, parts)


def test_both_classes_weights_normalised():
    both = ToyMixture((0, 1))
    assert both.num_components == 2032
    assert math.isclose(float(both.weights.sum()), 1.0, rel_tol=1e-12)
    # Class masses are unequal only through the random branch lengths: both near one half.
    assert 0.3 < float(both.weights[:1016].sum()) < 0.7
