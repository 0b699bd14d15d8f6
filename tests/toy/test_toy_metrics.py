"""Exact toy metrics on samples whose answer is known."""

import pytest
import torch

from autoguidance.toy.metrics import RecallReference, outlier_threshold, toy_metrics, true_depth_mass
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


@pytest.fixture(scope="module")
def reference(setup):
    a, _ = setup
    return RecallReference.build(a, 8192, seed=5)


def test_ground_truth_keeps_depths_and_coverage(setup, reference):
    a, tau = setup
    m = toy_metrics(
        a, a.sample(8192, 0.0, torch.Generator().manual_seed(9), dtype=torch.float64), tau, reference
    )
    assert m.depth_tv < 0.02 and abs(m.outer_depth_ratio - 1) < 0.1
    assert m.recall > 0.9 and m.recall_outer > 0.9
    assert m.branch_tv <= m.depth_tv + m.within_depth_tv + 1e-12
    torch.testing.assert_close(
        torch.tensor(m.depth_mass), torch.tensor(true_depth_mass(a)), atol=0.02, rtol=0
    )


def test_depth_metrics_see_emptied_outer_branches(setup, reference):
    # Keep depths 0..4 only: the outer depths are emptied, so their ratio and recall there are 0, and the
    # branch TV is mostly mass moved between depths (not reshuffled within one).
    a, tau = setup
    x = a.sample(16384, 0.0, torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x[a.depth[a.most_responsible(x)] <= 4]
    m = toy_metrics(a, x, tau, reference)
    assert m.outer_depth_ratio == 0 and m.recall_outer < 0.05 and m.recall > 0.5
    outer_mass = sum(true_depth_mass(a)[5:])
    assert abs(m.depth_tv - outer_mass) < 0.02 and m.within_depth_tv < 0.05


def test_reshuffling_within_a_depth_is_within_depth_tv(setup):
    # Move every sample of one branch onto another branch of the same depth: depth TV stays ~0.
    a, tau = setup
    x = a.sample(16384, 0.0, torch.Generator().manual_seed(6), dtype=torch.float64)
    comp = a.most_responsible(x)
    branch, depth = a.branch[comp], a.depth[comp]
    at_two = torch.unique(branch[depth == 2])
    src, dst = int(at_two[0]), int(at_two[1])
    dst_points = x[branch == dst]
    moved = dst_points[torch.randint(len(dst_points), (int((branch == src).sum()),))]
    y = torch.cat([x[branch != src], moved])
    m = toy_metrics(a, y, tau)
    assert m.depth_tv < 0.02 and m.within_depth_tv > 0.02 and m.branch_tv <= m.depth_tv + m.within_depth_tv
    assert m.recall != m.recall  # no reference: NaN
