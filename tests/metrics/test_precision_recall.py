"""k-NN precision/recall (k = 3) and density/coverage: 1 for a set with itself, falling for a shifted or a
collapsed set, and equal to a brute-force reading of the definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoguidance.metrics import precision_recall
from autoguidance.metrics.precision_recall import knn_radii, manifold_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _cloud(n: int, seed: int, d: int = 8) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_set_with_itself_is_one():
    x = _cloud(300, 0)
    m = manifold_metrics(x, x.clone(), k=3)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["coverage"] == 1.0


def test_same_distribution_is_high_shifted_and_collapsed_sets_fall():
    real = _cloud(500, 1)
    same = manifold_metrics(real, _cloud(500, 2))
    shifted = manifold_metrics(real, _cloud(500, 3) + 3.0)
    collapsed = manifold_metrics(real, 0.2 * _cloud(500, 4))  # all mass near the mode: no variety
    assert same["precision"] > 0.6 and same["recall"] > 0.6
    assert shifted["precision"] < 0.1 and shifted["recall"] < 0.1
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.3
    assert collapsed["coverage"] < same["coverage"]


def test_matches_brute_force_definitions(monkeypatch):
    monkeypatch.setattr(precision_recall, "BLOCK", 7)  # exercise the blocking
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.5
    k = 3

    def radii(a):
        return np.array([sorted(np.linalg.norm(a - p, axis=1))[k] for p in a])  # index 0 is p itself

    rr, rf = radii(real), radii(fake)
    inside = np.array([[np.linalg.norm(f - r) <= rad for r, rad in zip(real, rr, strict=True)] for f in fake])
    expected = {
        "precision": inside.any(1).mean(),
        "recall": np.mean(
            [any(np.linalg.norm(r - f) <= rad for f, rad in zip(fake, rf, strict=True)) for r in real]
        ),
        "density": inside.sum() / (k * len(fake)),
        "coverage": inside.any(0).mean(),
    }
    got = manifold_metrics(torch.from_numpy(real), torch.from_numpy(fake), k=k)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    assert np.allclose(knn_radii(torch.from_numpy(real), k).numpy(), rr)


def test_bad_shapes_and_k():
    with pytest.raises(ValueError):
        manifold_metrics(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError):
        knn_radii(torch.zeros(3, 2), 3)
