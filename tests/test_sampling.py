"""EDM schedule and samplers on a Gaussian target whose denoiser is exact; seed independence."""

import math

import pytest
import torch

from autoguidance import Churn, SeedStreams, UserInputError, edm_sigmas, parse_seeds, sample


def gaussian_denoiser(std, calls=None):
    def d(x, sigma, cond=None):
        if calls is not None:
            calls.append(float(sigma[0]))
        return x * std**2 / (std**2 + sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2)

    return d


def test_schedule_formula():
    sig = edm_sigmas(32, 0.002, 80.0, 7.0)
    assert len(sig) == 33 and sig[-1] == 0
    assert math.isclose(float(sig[0]), 80.0) and math.isclose(float(sig[-2]), 0.002)
    i = 10
    expected = (80 ** (1 / 7) + i / 31 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert math.isclose(float(sig[i]), expected, rel_tol=1e-12)
    assert torch.all(sig[:-1] > sig[1:])


@pytest.mark.parametrize("solver,evals", [("heun", 2 * 32 - 1), ("euler", 32)])
def test_number_of_evaluations(solver, evals):
    calls = []
    sample(gaussian_denoiser(1.0, calls), torch.randn(4, 2), edm_sigmas(32), solver=solver)
    assert len(calls) == evals


def flow_error(n, solver):
    """Max relative deviation from the exact probability-flow map of N(0, std^2) data, which sends
    x(sigma_max) to x * std / sqrt(std^2 + sigma_max^2) at sigma = 0."""
    std = 0.7
    lat = torch.linspace(-3, 3, 101, dtype=torch.float64).reshape(-1, 1)
    x = sample(gaussian_denoiser(std), lat, edm_sigmas(n, 0.002, 80.0), solver=solver)
    exact = lat * 80 * std / math.sqrt(std**2 + 80**2)
    return float((x - exact).abs().max() / exact.abs().max())


def test_heun_is_second_order_and_euler_first_order():
    heun = [flow_error(n, "heun") for n in (32, 64, 128)]
    euler = [flow_error(n, "euler") for n in (32, 64, 128)]
    for coarse, fine in zip(heun, heun[1:], strict=False):
        assert 3.5 < coarse / fine < 4.5  # error ~ N^-2
    for coarse, fine in zip(euler, euler[1:], strict=False):
        assert 1.8 < coarse / fine < 2.2  # error ~ N^-1
    assert heun[0] < 0.02 and flow_error(256, "heun") < 3e-4


def test_heun_recovers_gaussian_variance():
    std = 0.7
    latents = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sample(gaussian_denoiser(std), latents, edm_sigmas(128, 0.002, 80.0))
    assert abs(float(x.std()) / std - 1) < 0.004  # sampling error ~0.16%, Heun error at 128 steps ~0.08%


@pytest.mark.slow
def test_churn_keeps_the_target_variance():
    std = 0.7
    streams = SeedStreams(range(40_000))
    latents = streams.randn((1,), dtype=torch.float64)
    x = sample(
        gaussian_denoiser(std),
        latents,
        edm_sigmas(128, 0.002, 80.0),
        churn=Churn(s_churn=10, s_min=0.05, s_max=50),
        streams=streams,
    )
    assert abs(float(x.std()) / std - 1) < 0.015  # sampling error ~0.35%


def test_seeded_samples_do_not_depend_on_batch_size():
    d = gaussian_denoiser(0.5)
    sig = edm_sigmas(8, 0.002, 10.0)
    churn = Churn(s_churn=10)

    def run(seeds):
        st = SeedStreams(seeds)
        return sample(d, st.randn((3,)), sig, churn=churn, streams=st)

    whole = run(range(100, 108))
    split = torch.cat([run(range(100, 103)), run(range(103, 104)), run(range(104, 108))])
    assert torch.equal(whole, split)


def test_trajectory_is_the_path_the_sampler_took():
    # states[i] is x at sigma_i (x_0 = sigma_0 * latents), denoised[i] is D(states[i]; sigma_i), and with
    # Euler each state follows from the previous one by one step along (x - D) / sigma (EDM eq. 4).
    d, sig, latents = gaussian_denoiser(1.0), edm_sigmas(6), torch.randn(5, 2, dtype=torch.float64)
    x, traj = sample(d, latents, sig, solver="euler", return_trajectory=True)
    assert traj.states.shape == (7, 5, 2) and traj.denoised.shape == (6, 5, 2)
    assert torch.equal(traj.states[0], latents * sig[0]) and torch.equal(traj.states[-1], x)
    for i in range(6):
        s, t = float(sig[i]), float(sig[i + 1])
        state, denoised = traj.states[i], traj.denoised[i]
        torch.testing.assert_close(denoised, d(state, torch.full((5,), s, dtype=torch.float64)))
        torch.testing.assert_close(traj.states[i + 1], state + (t - s) * (state - denoised) / s)


def test_parse_seeds():
    assert parse_seeds("0-3,10, 12-12") == [0, 1, 2, 3, 10, 12]
    for bad in ["", "5-2", "abc", "1-", "-3", "1,,2"]:
        with pytest.raises(UserInputError):
            parse_seeds(bad)
