"""Guidance identities: w = 1 is the main model, CFG and truncation are special cases, the interval
keeps guides unevaluated outside it, and the weights are checked."""

from __future__ import annotations

import math

import pytest
import torch

from autoguidance import (
    GuidedDenoiser,
    GuideTerm,
    autoguidance,
    classifier_free,
    interpolated,
    truncation,
)
from autoguidance.errors import UserInputError
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config


class Counting:
    """A Gaussian-data denoiser D(x) = x s^2 / (s^2 + sigma^2) that records what it was called with."""

    def __init__(self, scale: float, shift: float = 0.0):
        self.scale, self.shift, self.calls = scale, shift, []

    def __call__(self, x, sigma, cond=None):
        self.calls.append((x.shape[0], sigma.clone(), cond))
        s2 = sigma.reshape(-1, 1) ** 2
        return self.shift + (x - self.shift) * self.scale**2 / (self.scale**2 + s2)


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g, dtype=torch.float64), torch.linspace(
        0.1, 3.0, n, dtype=torch.float64
    )


def test_weight_one_is_main_model_without_evaluating_guide():
    main, guide = Counting(1.0), Counting(0.5)
    x, s = batch()
    assert torch.equal(autoguidance(main, guide, 1.0)(x, s), main(x, s))
    assert guide.calls == []


def test_two_model_formula():
    main, guide = Counting(1.0, 0.2), Counting(0.5)
    x, s = batch()
    w = 2.5
    expected = guide(x, s) + w * (main(x, s) - guide(x, s))  # D_w = D0 + w (D1 - D0)
    torch.testing.assert_close(autoguidance(main, guide, w)(x, s), expected)


def test_guided_score_is_score_of_p1_times_ratio_power():
    # The guided denoiser's score equals grad log p1 + (w - 1) grad log(p1 / p0) (paper eq. 2).
    main, guide = Counting(1.0), Counting(0.5)
    x, s = batch()
    w = 3.0
    s2 = s.reshape(-1, 1) ** 2
    score = lambda d: (d - x) / s2  # noqa: E731
    s1, s0 = score(main(x, s)), score(guide(x, s))
    torch.testing.assert_close(score(autoguidance(main, guide, w)(x, s)), s1 + (w - 1) * (s1 - s0))


def test_cfg_calls_guide_unconditionally():
    cond_model, uncond = Counting(1.0), Counting(0.7)
    x, s = batch()
    labels = torch.arange(6)
    out = classifier_free(cond_model, uncond, 4.0)(x, s, labels)
    assert all(c is None for _, _, c in uncond.calls)
    assert cond_model.calls[0][2] is labels
    torch.testing.assert_close(out, uncond(x, s) + 4.0 * (cond_model(x, s) - uncond(x, s)))


def test_truncation_scales_the_score():
    main = Counting(1.0, 0.3)
    x, s = batch()
    lam = 1.4
    torch.testing.assert_close(truncation(main, lam)(x, s), x + lam * (main(x, s) - x))


def test_interpolation_endpoints_are_cfg_and_autoguidance():
    main, uncond, weak = Counting(1.0), Counting(0.6), Counting(0.8, 0.1)
    x, s = batch()
    w = 2.0
    torch.testing.assert_close(
        interpolated(main, uncond, weak, w, 0.0)(x, s), classifier_free(main, uncond, w)(x, s)
    )
    torch.testing.assert_close(
        interpolated(main, uncond, weak, w, 1.0)(x, s), autoguidance(main, weak, w)(x, s)
    )
    half = interpolated(main, uncond, weak, w, 0.5)(x, s)
    d1 = main(x, s)
    torch.testing.assert_close(half, d1 + 0.5 * (d1 - uncond(x, s)) + 0.5 * (d1 - weak(x, s)))


def test_interval_evaluates_guide_only_inside():
    main, guide = Counting(1.0), Counting(0.5)
    x, s = batch()  # sigmas 0.1 .. 3.0
    lo, hi = 0.5, 1.8
    guided = autoguidance(main, guide, 2.0, interval=(lo, hi))
    out = guided(x, s)
    inside = (s > lo) & (s <= hi)
    ((n, called_sigma, _),) = guide.calls
    assert n == int(inside.sum()) and torch.equal(called_sigma, s[inside])
    full = autoguidance(main, Counting(0.5), 2.0)(x, s)
    torch.testing.assert_close(out[inside], full[inside])
    torch.testing.assert_close(out[~inside], main(x, s)[~inside])
    # Entirely outside: the guide is never called.
    guide.calls.clear()
    guided(x, torch.full((6,), 10.0, dtype=torch.float64))
    assert guide.calls == []


@pytest.mark.parametrize("w", [math.nan, math.inf, -0.5])
def test_bad_weights_are_rejected(w):
    with pytest.raises(UserInputError):
        autoguidance(Counting(1), Counting(1), w)
    with pytest.raises(UserInputError):
        GuidedDenoiser(Counting(1), [GuideTerm(Counting(1), w)])


@pytest.mark.parametrize("interval", [(1.0, 0.5), (-1.0, 2.0), (math.nan, 1.0)])
def test_bad_intervals_are_rejected(interval):
    with pytest.raises(UserInputError):
        autoguidance(Counting(1), Counting(1), 2.0, interval=interval)


def test_interval_is_decided_once_per_sampler_step():
    # Kynkaanniemi et al. 2024 apply the interval per step: the step from sigma_i is guided in both its
    # Euler and Heun-correction evaluations when lo < sigma_i <= hi, and not at all otherwise, even where
    # sigma_{i+1} (or sigma_i) lies on the other side of an edge.
    from autoguidance import sample

    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    lo, hi = 1.0, 2.5  # steps from 2.0 is inside (its correction at 1.0 = lo is not); 1.0 is outside
    main, guide = Counting(1.0), Counting(0.5)
    guided = autoguidance(main, guide, 2.0, interval=(lo, hi))
    assert guided.inside(2.5) and not guided.inside(1.0) and not guided.inside(3.0)
    assert guided.inside(1.0000001)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = sample(guided, x0, sigmas, solver="heun")
    assert sorted({float(s[0]) for _, s, _ in guide.calls}) == [1.0, 2.0]  # both evaluations of step 2.0
    # Wrapped in anything, the guided denoiser keeps the per-step rule: the step is the sampler's
    # context, not an attribute a wrapper could hide.
    guide.calls.clear()

    def wrapper(x, sigma, cond=None):
        return guided(x, sigma, cond)

    torch.testing.assert_close(sample(wrapper, x0, sigmas, solver="heun"), out, rtol=0, atol=0)
    assert sorted({float(s[0]) for _, s, _ in guide.calls}) == [1.0, 2.0]
    # Called outside a sampler it decides per sample, from each sample's own sigma.
    x = torch.randn(3, 2, dtype=torch.float64)
    mixed = guided(x, torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    alone = main(x, torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert torch.equal(mixed[[0, 2]], alone[[0, 2]]) and not torch.equal(mixed[1], alone[1])

    # Ground truth: Heun by hand with the step's denoiser fixed from sigma_i.
    always = autoguidance(Counting(1.0), Counting(0.5), 2.0)
    x = x0 * sigmas[0]
    for i in range(len(sigmas) - 1):
        s, t = float(sigmas[i]), float(sigmas[i + 1])
        d = always if lo < s <= hi else Counting(1.0)
        ds = (x - d(x, torch.full((4,), s, dtype=torch.float64))) / s
        x_next = x + (t - s) * ds
        if t > 0:
            dt = (x_next - d(x_next, torch.full((4,), t, dtype=torch.float64))) / t
            x_next = x + (t - s) * 0.5 * (ds + dt)
        x = x_next
    torch.testing.assert_close(out, x)
    # Euler: the one evaluation per step follows the same rule.
    guide.calls.clear()
    sample(guided, x0, sigmas, solver="euler")
    assert [float(s[0]) for _, s, _ in guide.calls] == [2.0]


def test_guidance_builders_refuse_mismatched_networks():
    main8, main32 = build(preset_config("xxs", 8, 1, 10)), build(preset_config("xxs", 32, 1, 10))
    rgb8, uncond8 = build(preset_config("xxs", 8, 3, 10)), build(preset_config("xxs", 8, 1, 0))
    with pytest.raises(UserInputError, match="1x32x32 samples, the main model on 1x8x8"):
        autoguidance(main8, main32, 2.0)
    with pytest.raises(UserInputError, match="3x8x8"):
        autoguidance(main8, rgb8, 2.0)
    with pytest.raises(UserInputError, match="0 classes, the main model 10"):
        autoguidance(main8, uncond8, 2.0)
    classifier_free(main8, uncond8, 2.0)  # CFG: the guide is called without labels
    with pytest.raises(UserInputError, match="unconditional model works on"):
        classifier_free(main8, build(preset_config("xxs", 16, 1, 0)), 2.0)
    autoguidance(main8, lambda x, s, c=None: x, 2.0)  # undeclared denoisers are not checked


def test_conditioning_other_than_classes_allows_cfg_and_must_match():
    # A text model declares classes=0 and conditioning "text": it may be its own CFG term (cond=None is
    # its negative prompt), and a guide must take the same kind of conditioning.
    from autoguidance import Signature, guided

    class Declared(Counting):
        def __init__(self, signature, scale):
            super().__init__(scale)
            self.signature = signature

    text = Declared(Signature((2,), 0, "text"), 1.0)
    guide = Declared(Signature((2,), 0, "text"), 0.5)
    x, sigma = batch(2)
    out = guided(text, guide, 2.0, uncond=text, w_uncond=3.0)(x, sigma, "prompt")
    d1, dg = text(x, sigma, "prompt"), guide(x, sigma, "prompt")
    torch.testing.assert_close(out, d1 + (d1 - dg) + 2 * (d1 - text(x, sigma, None)))
    assert [c for _, _, c in guide.calls] == ["prompt", "prompt"]  # the guide gets the prompt
    plain = Declared(Signature((2,), 0), 1.0)
    with pytest.raises(UserInputError, match="needs a conditional main model"):
        guided(plain, uncond=plain, w_uncond=2.0)
    with pytest.raises(UserInputError, match="takes image conditioning, the main model text"):
        guided(text, Declared(Signature((2,), 0, "image"), 0.5), 2.0)
