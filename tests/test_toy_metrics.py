"""Exact toy metrics on samples whose answer is known."""

import pytest
import torch

from autoguidance.metrics.toy import outlier_threshold, toy_metrics
from autoguidance.toy.mixture import ToyMixture


@pytest.fixture(scope="module")
def setup():
    a = ToyMixture((0,))
    return a, outlier_threshold(a, 2**17, seed=0)


def test_ground_truth_scores_by_construction(setup):
    a, tau = setup
    m = toy_metrics(a, a.sample(32768, 0.0, torch.Generator().manual_seed(9), dtype=torch.float64), tau)
    assert abs(m.outlier_fraction - 0.01) < 0.003
    assert m.branch_tv < 0.04
    assert m.num_samples == 32768


def test_other_class_is_all_outliers_and_far_in_tv(setup):
    a, tau = setup
    b = ToyMixture((1,))
    m = toy_metrics(a, b.sample(4096, 0.0, torch.Generator().manual_seed(1), dtype=torch.float64), tau)
    assert m.outlier_fraction > 0.9


def test_sharpening_removes_outliers_but_loses_branches(setup):
    # Only the heaviest components (the trunk): no outliers, but coverage collapses.
    a, tau = setup
    x = a.sample(8192, 0.0, torch.Generator().manual_seed(2), dtype=torch.float64)
    depth = a.depth[a.most_responsible(x)]
    trunk = x[depth <= 1]
    m = toy_metrics(a, trunk, tau)
    assert m.outlier_fraction < 0.01 and m.branch_tv > 0.5


def test_diverged_samples_count_as_outliers(setup):
    a, tau = setup
    x = a.sample(100, 0.0, torch.Generator().manual_seed(3), dtype=torch.float64)
    x[:10] = float("nan")
    assert toy_metrics(a, x, tau).outlier_fraction >= 0.1
