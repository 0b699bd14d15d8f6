"""Post-hoc EMA: profile algebra against quadrature, and reconstructions against directly tracked EMAs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from autoguidance.errors import UserInputError
from autoguidance.training.ema import PowerFunctionEMA, sigma_rel_to_gamma
from autoguidance.training.phema import (
    list_snapshots,
    profile_inner,
    reconstruct,
    reconstruct_files,
    save_snapshot,
    snapshot_path,
    solve_weights,
)


def _profile(t: float, gamma: float):
    return lambda tau: (gamma + 1) / t * (tau / t) ** gamma if tau <= t else 0.0


@pytest.mark.parametrize(
    "t_a, g_a, t_b, g_b",
    [
        (1.0, 0.0, 1.0, 0.0),
        (100.0, 6.94, 250.0, 16.97),
        (250.0, 16.97, 100.0, 6.94),
        (3.0, 97.0, 2.5, 0.5),
        (7.0, -0.3, 9.0, 2.0),
    ],
)
def test_profile_inner_matches_quadrature(t_a, g_a, t_b, g_b):
    pa, pb = _profile(t_a, g_a), _profile(t_b, g_b)
    t_lo = min(t_a, t_b)
    # Sharp profiles (large gamma) concentrate near their end: tell quad where to look.
    expected, _ = integrate.quad(
        lambda x: pa(x) * pb(x),
        0.0,
        t_lo,
        points=[0.9 * t_lo, 0.99 * t_lo],
        epsabs=0,
        epsrel=1e-11,
        limit=200,
    )
    assert float(profile_inner(t_a, g_a, t_b, g_b)) == pytest.approx(expected, rel=1e-8)
    assert float(profile_inner(t_b, g_b, t_a, g_a)) == pytest.approx(expected, rel=1e-12)


def test_profile_inner_broadcasts():
    t = np.array([1.0, 2.0, 3.0])
    out = profile_inner(t[:, None], 5.0, t[None, :], np.array([1.0, 2.0, 3.0])[None, :])
    assert out.shape == (3, 3) and out.dtype == np.float64
    assert out[1, 2] == pytest.approx(float(profile_inner(2.0, 5.0, 3.0, 3.0)))


def test_solve_weights_recovers_a_snapshot_profile():
    t = np.array([100.0, 200.0, 300.0, 100.0, 200.0, 300.0])
    g = np.array([6.94] * 3 + [16.97] * 3)
    x = solve_weights(t, g, 300.0, [16.97, 10.0])
    assert x.shape == (6, 2)
    np.testing.assert_allclose(x.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(x[:, 0], np.eye(6)[5], atol=1e-6)
    # Invariant to the time unit (iterations vs images).
    np.testing.assert_allclose(solve_weights(t * 4096, g, 300.0 * 4096, [16.97, 10.0]), x, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Reconstruction against directly tracked EMAs on a simulated parameter trajectory

STEPS, DIM, EVERY = 4096, 8, 256
TRACKED = (0.05, 0.10)


class Vector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(DIM))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


@pytest.fixture(scope="module")
def run():
    """A noisy drifting random walk, two tracked profiles snapshotted every EVERY steps, and direct EMAs."""
    rng = np.random.default_rng(0)
    k = np.arange(STEPS)
    drift = 0.001 + 0.002 * np.sin(k / 300.0)[:, None]
    traj = np.cumsum(0.05 * rng.normal(size=(STEPS, DIM)) + drift, axis=0).astype(np.float32)
    model = Vector()
    tracked = PowerFunctionEMA(model, TRACKED)
    direct = PowerFunctionEMA(model, (0.07, 0.10))  # ground truth for the reconstructions
    snapshots, direct_at = [], {}
    for step in range(1, STEPS + 1):
        with torch.no_grad():
            model.w.copy_(torch.from_numpy(traj[step - 1]))
            model.steps += 1
        tracked.update(model, step, 1)
        direct.update(model, step, 1)
        if step % EVERY == 0:
            for i, gamma in enumerate(tracked.gammas):
                tensors = {n: v.clone() for n, v in tracked.ema_tensors(i).items()}
                snapshots.append((float(step), gamma, tensors))
            direct_at[step] = {s: direct.ema_tensors(i)["w"].clone() for i, s in enumerate((0.07, 0.10))}
    spread = torch.from_numpy(traj.std(axis=0))  # the trajectory's own scale, per coordinate
    return snapshots, direct_at, spread


def _rel_err(a: torch.Tensor, b: torch.Tensor, spread: torch.Tensor) -> float:
    return float(((a - b).abs() / spread).max())


@pytest.mark.parametrize("target_t", [STEPS, STEPS // 2])
def test_reconstruction_matches_direct_ema(run, target_t):
    snapshots, direct_at, spread = run
    rec07, rec10 = reconstruct(snapshots, [0.07, 0.10], target_t=None if target_t == STEPS else target_t)
    truth = direct_at[target_t]
    # 0.10 was also snapshotted: the fit must pick that snapshot (float32 rounding only).
    assert _rel_err(rec10["w"], truth[0.10], spread) < 1e-5
    # 0.07 was never tracked: a genuine reconstruction. Measured ~7e-4 (final) and ~2.3e-3 (halfway) of
    # the trajectory's std; the 0.05 and 0.10 EMAs themselves differ from it by far more.
    err = _rel_err(rec07["w"], truth[0.07], spread)
    assert err < 0.01
    nearest = min(_rel_err(s[2]["w"], truth[0.07], spread) for s in snapshots if s[0] == target_t)
    assert err < 0.1 * nearest
    assert rec07["w"].dtype == torch.float32
    assert rec07["steps"].item() == target_t  # integer buffers come from the latest snapshot used


def test_reconstruction_ignores_later_snapshots(run):
    snapshots, _, _ = run
    early = [s for s in snapshots if s[0] <= 1024]
    a = reconstruct(snapshots, 0.07, target_t=1024)[0]["w"]
    b = reconstruct(early, 0.07, target_t=1024)[0]["w"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_streaming_matches_in_memory(run, tmp_path):
    snapshots, _, _ = run
    for step, gamma, tensors in snapshots:
        sigma_rel = TRACKED[0] if abs(gamma - sigma_rel_to_gamma(TRACKED[0])) < 1e-9 else TRACKED[1]
        save_snapshot(
            snapshot_path(tmp_path, int(step), sigma_rel),
            tensors,
            t=step,
            gamma=gamma,
            step=int(step),
            extra_meta={"net": "toy"},
        )
    (tmp_path / "snapshots" / ".phema-unfinished.tmp.safetensors").write_bytes(b"partial")  # ignored
    infos = list_snapshots(tmp_path)
    assert len(infos) == len(snapshots)
    assert [i.t for i in infos] == sorted(i.t for i in infos)
    assert {round(i.sigma_rel, 6) for i in infos} == set(TRACKED)
    for target_t in (None, 1536.0):
        streamed = reconstruct_files(infos, [0.07, 0.10], target_t=target_t)
        in_memory = reconstruct(snapshots, [0.07, 0.10], target_t=target_t)
        for s, m in zip(streamed, in_memory, strict=True):
            torch.testing.assert_close(s["w"], m["w"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def _tiny_run(tmp_path, shapes=((3,), (3,))):
    gamma = sigma_rel_to_gamma(0.1)
    for i, shape in enumerate(shapes, start=1):
        path = snapshot_path(tmp_path, i, 0.1)
        save_snapshot(path, {"w": torch.ones(shape)}, t=i * 10.0, gamma=gamma, step=i)
    return tmp_path


def test_no_snapshots(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        list_snapshots(tmp_path)
    (tmp_path / "snapshots").mkdir()
    with pytest.raises(UserInputError, match="no EMA snapshots"):
        list_snapshots(tmp_path)
    with pytest.raises(UserInputError, match="no snapshots"):
        reconstruct([], 0.1)


def test_mismatched_shapes(tmp_path):
    infos = list_snapshots(_tiny_run(tmp_path, shapes=((3,), (4,))))
    with pytest.raises(UserInputError, match="does not match"):
        reconstruct_files(infos, 0.1)
    gamma = sigma_rel_to_gamma(0.1)
    with pytest.raises(UserInputError, match="missing"):
        reconstruct([(1.0, gamma, {"w": torch.ones(3)}), (2.0, gamma, {"v": torch.ones(3)})], 0.1)


def test_corrupt_snapshot_file(tmp_path):
    _tiny_run(tmp_path)
    bad = snapshot_path(tmp_path, 3, 0.1)
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(UserInputError, match="corrupt snapshot"):
        list_snapshots(tmp_path)
    # A file truncated after listing fails when its tensors are read.
    bad.unlink()
    infos = list_snapshots(tmp_path)
    data = infos[-1].path.read_bytes()
    infos[-1].path.write_bytes(data[:-4])
    with pytest.raises(UserInputError, match="corrupt"):
        reconstruct_files(infos, 0.1)


def test_wrong_kind_and_targets(tmp_path):
    from autoguidance.io import checkpoint

    run_dir = _tiny_run(tmp_path)
    infos = list_snapshots(run_dir)
    with pytest.raises(UserInputError, match="beyond the last snapshot"):
        reconstruct_files(infos, 0.1, target_t=25.0)
    with pytest.raises(UserInputError, match="before the first snapshot"):
        reconstruct_files(infos, 0.1, target_t=5.0)
    with pytest.raises(UserInputError, match="sigma_rel"):
        reconstruct_files(infos, [0.1, 0.4])
    with pytest.raises(UserInputError, match="sigma_rel"):
        reconstruct_files(infos, [])
    checkpoint.save(run_dir / "snapshots" / "model.safetensors", {"w": torch.ones(3)}, {"kind": "denoiser"})
    with pytest.raises(UserInputError, match="expected an EMA snapshot"):
        list_snapshots(run_dir)
