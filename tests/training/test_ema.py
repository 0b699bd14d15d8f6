"""Power-function EMA: sigma_rel <-> gamma, the exact discrete profile, its moments, state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from autoguidance.errors import UserInputError
from autoguidance.io import checkpoint
from autoguidance.training.ema import (
    SIGMA_REL_MAX,
    PowerFunctionEMA,
    gamma_to_sigma_rel,
    sigma_rel_to_gamma,
)


class Scalars(nn.Module):
    """A 'network' whose parameters the test sets directly: float64 so the checks can be tight."""

    def __init__(self, n: int = 1, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=dtype))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("stat", torch.zeros(2))


def _set(model: nn.Module, values) -> None:
    with torch.no_grad():
        model.w.copy_(torch.as_tensor(values, dtype=model.w.dtype))


@pytest.mark.parametrize("sigma_rel, gamma", [(0.010, 97.0), (0.050, 16.97), (0.100, 6.94)])
def test_known_gammas(sigma_rel, gamma):
    assert sigma_rel_to_gamma(sigma_rel) == pytest.approx(gamma, abs=0.05)


def test_round_trips():
    for s in np.concatenate([np.geomspace(1e-4, 0.28, 25), [math.sqrt(1 / 12), 0.29, 0.3, SIGMA_REL_MAX]]):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-10)
    for g in [-0.38, -0.2, 0.0, 0.5, 3.0, 6.94, 16.97, 97.0, 1e4]:
        assert sigma_rel_to_gamma(gamma_to_sigma_rel(g)) == pytest.approx(g, rel=1e-8, abs=1e-8)
    assert sigma_rel_to_gamma(math.sqrt(1 / 12)) == pytest.approx(0.0, abs=1e-10)  # the plain average


@pytest.mark.parametrize("bad", [0.0, -0.05, 0.31, 1.0, math.nan, math.inf])
def test_sigma_rel_out_of_range(bad):
    with pytest.raises(UserInputError):
        sigma_rel_to_gamma(bad)


@pytest.mark.parametrize("bad", [-1.0, -2.0, math.nan])
def test_gamma_out_of_range(bad):
    with pytest.raises(UserInputError):
        gamma_to_sigma_rel(bad)


def test_equals_explicit_discrete_profile():
    """With any increments, step k gets weight (t_k/T)^(g+1) - (t_{k-1}/T)^(g+1): no approximation."""
    rng = np.random.default_rng(1)
    n = 500
    theta = rng.normal(size=(n, 3))
    dt = rng.integers(1, 65, size=n).astype(np.float64)  # e.g. images per step, varying batch size
    t = np.cumsum(dt)
    model = Scalars(3)
    ema = PowerFunctionEMA(model, (0.03, 0.12, 0.25))
    for k in range(n):
        _set(model, theta[k])
        ema.update(model, t[k], dt[k])
    t_prev = np.concatenate([[0.0], t[:-1]])
    for i, g in enumerate(ema.gammas):
        w = (t / t[-1]) ** (g + 1) - (t_prev / t[-1]) ** (g + 1)
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(ema.ema_tensors(i)["w"].numpy(), w @ theta, rtol=0, atol=1e-12)


def test_first_step_overwrites_initial_value():
    model = Scalars(2)
    _set(model, [5.0, -1.0])
    ema = PowerFunctionEMA(model, (0.1,))
    _set(model, [2.0, 3.0])
    ema.update(model, cur_t=32, delta_t=32)  # beta = 0
    assert ema.ema_tensors(0)["w"].tolist() == [2.0, 3.0]


def test_long_run_profile_moments():
    """After 10,000 steps the averaging profile has the continuous profile's mean and sigma_rel."""
    n = 10_000
    model = Scalars(2)
    sigma_rels = (0.05, 0.10)
    ema = PowerFunctionEMA(model, sigma_rels)
    for k in range(1, n + 1):
        _set(model, [k, float(k) ** 2])  # EMA of t and of t^2: the profile's first two moments
        ema.update(model, k, 1)
    for i, (s, g) in enumerate(zip(sigma_rels, ema.gammas, strict=True)):
        m1, m2 = ema.ema_tensors(i)["w"].tolist()
        assert m1 / n == pytest.approx((g + 1) / (g + 2), rel=2e-4)
        assert math.sqrt(m2 - m1**2) / n == pytest.approx(s, rel=1e-3)


def test_buffers_copied_dtypes_and_copy_to():
    model = Scalars(2, dtype=torch.bfloat16)
    ema = PowerFunctionEMA(model, (0.05, 0.2))
    assert ema.ema_tensors(0)["w"].dtype == torch.float32  # half-precision weights averaged in float32
    for k in range(1, 11):
        _set(model, [k, -k])
        model.count += 1
        model.stat.fill_(float(k))
        ema.update(model, k, 1)
    for i in range(2):
        assert ema.ema_tensors(i)["count"].item() == 10
        assert ema.ema_tensors(i)["stat"].tolist() == [10.0, 10.0]
    ref = ema.ema_tensors(1)["w"].clone()
    assert 1.0 < ref[0].item() < 10.0
    ema.copy_to(model, 1)
    assert model.w.dtype == torch.bfloat16
    torch.testing.assert_close(model.w.float(), ref.to(torch.bfloat16).float())


def test_wrapped_model_uses_inner_names():
    inner = Scalars(2)
    wrapped = nn.DataParallel(inner)  # CPU-only DataParallel is a pass-through wrapper, like DDP for names
    ema = PowerFunctionEMA(wrapped, (0.1,))
    assert set(ema.ema_tensors(0)) == {"w", "count", "stat"}
    _set(inner, [1.0, 2.0])
    ema.update(wrapped, 1, 1)
    ema.update(inner, 2, 1)  # wrapped and bare updates are interchangeable
    assert ema.ema_tensors(0)["w"].tolist() == [1.0, 2.0]


def test_state_dict_round_trip_through_checkpoint(tmp_path):
    model = Scalars(3)
    ema = PowerFunctionEMA(model, (0.05, 0.10))
    rng = np.random.default_rng(2)
    for k in range(1, 21):
        _set(model, rng.normal(size=3))
        ema.update(model, k, 1)
    path = tmp_path / "ema.safetensors"
    checkpoint.save(path, ema.state_dict(), {"kind": "ema_state"})
    state, _ = checkpoint.load(path, kind="ema_state")

    fresh = PowerFunctionEMA(Scalars(3), (0.05, 0.10))
    fresh.load_state_dict(state)
    for i in range(2):
        for name, t in ema.ema_tensors(i).items():
            torch.testing.assert_close(fresh.ema_tensors(i)[name], t, rtol=0, atol=0)
    # Continuing from the restored state gives the same result as never stopping.
    _set(model, [1.0, 2.0, 3.0])
    ema.update(model, 21, 1)
    fresh.update(model, 21, 1)
    torch.testing.assert_close(fresh.ema_tensors(0)["w"], ema.ema_tensors(0)["w"], rtol=0, atol=0)

    with pytest.raises(UserInputError, match="sigma_rels"):
        PowerFunctionEMA(Scalars(3), (0.05, 0.15)).load_state_dict(state)
    with pytest.raises(UserInputError, match="shape"):
        PowerFunctionEMA(Scalars(4), (0.05, 0.10)).load_state_dict(state)
    with pytest.raises(UserInputError, match="missing"):
        partial = {k: v for k, v in state.items() if k != "ema1.w"}
        PowerFunctionEMA(Scalars(3), (0.05, 0.10)).load_state_dict(partial)


def test_bad_updates():
    model = Scalars(1)
    ema = PowerFunctionEMA(model, (0.1,))
    with pytest.raises(ValueError):
        ema.update(model, cur_t=1, delta_t=2)
    with pytest.raises(ValueError):
        ema.update(model, cur_t=1, delta_t=0)
    with pytest.raises(ValueError):
        ema.update(nn.Linear(2, 2), cur_t=1, delta_t=1)
    with pytest.raises(UserInputError):
        PowerFunctionEMA(model, (0.5,))


def test_ema_follows_each_parameter_by_name():
    """Parameters with distinct values and shapes: an EMA that mixed up names would fail here."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    ema = PowerFunctionEMA(net, (0.1,))
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.fill_(float(i + 1))
    ema.update(net, cur_t=1, delta_t=1)  # the first update copies the parameters
    for i, (name, _) in enumerate(net.named_parameters()):
        assert torch.equal(ema.ema_tensors(0)[name], torch.full_like(ema.ema_tensors(0)[name], i + 1.0)), name
    state = ema.state_dict()
    state["ema0.0.bogus"] = state.pop("ema0.0.weight")
    with pytest.raises(UserInputError, match="ema0.0.weight"):
        PowerFunctionEMA(net, (0.1,)).load_state_dict(state)
    renamed = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    renamed.add_module("extra", torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="names differ"):
        ema.update(renamed, cur_t=2, delta_t=1)
