"""Training-free weak guides: equal to the main network at zero degradation, deterministic per seed,
independent of the batch, and leaving the main network untouched."""

import pytest
import torch

from autoguidance.errors import UserInputError
from autoguidance.generate import generate_images
from autoguidance.guidance import guided
from autoguidance.guides.weak import (
    DropoutGuide,
    InputNoiseGuide,
    QuantizedGuide,
    SkipBlocksGuide,
    block_names,
    weak_guide,
)
from autoguidance.nets import build, preset_config
from autoguidance.sampling import SamplerSettings
from autoguidance.wrappers.precision import LowPrecision

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = build(preset_config("xs", 8, 1, 10)).eval()
    with torch.no_grad():  # non-zero gains so that every block contributes
        for p in n.parameters():
            if p.ndim == 0:
                p.fill_(0.7)
    return n


def _inputs(batch=4):
    g = torch.Generator().manual_seed(5)
    sigma = torch.tensor([0.05, 0.5, 2.0, 20.0])[:batch]
    x = torch.randn(batch, 1, 8, 8, generator=g) * (1 + sigma[:, None, None, None])
    return x, sigma, torch.arange(batch)


def _eval(d):
    with torch.no_grad():
        return d(*_inputs())


SPECS_ZERO = ["dropout:0", "input-noise:0", "quantize:0", "precision:fp32", "skip:"]
SPECS = [
    "dropout:0.2",
    "input-noise:0.5",
    "quantize:3",
    "precision:bf16",
    "skip:unet.dec.4x4_in0+unet.enc.8x8_block1",
]


@pytest.mark.parametrize("spec", SPECS_ZERO)
def test_zero_degradation_equals_main(net, spec):
    torch.testing.assert_close(_eval(weak_guide(net, spec)), _eval(net), rtol=0, atol=0)


@pytest.mark.parametrize("spec", SPECS)
def test_degraded_guide_is_deterministic_and_different(net, spec):
    main = _eval(net)
    a, b = _eval(weak_guide(net, spec, seed=3)), _eval(weak_guide(net, spec, seed=3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - main).abs().max() > 1e-4
    torch.testing.assert_close(_eval(net), main, rtol=0, atol=0)  # the main network is left as it was


@pytest.mark.parametrize("spec", ["dropout:0.2", "input-noise:0.5"])
def test_random_guides_depend_on_seed_not_batch(net, spec):
    g = weak_guide(net, spec, seed=1)
    x, sigma, cond = _inputs()
    with torch.no_grad():
        whole = g(x, sigma, cond)
        parts = torch.cat([g(x[i : i + 1], sigma[i : i + 1], cond[i : i + 1]) for i in range(4)])
        other = weak_guide(net, spec, seed=2)(x, sigma, cond)
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-5)
    assert (whole - other).abs().max() > 1e-4


class _Recorder(torch.nn.Module):
    """A stand-in network that returns its input and remembers the noise level it was told."""

    def forward(self, x, sigma, cond=None):
        self.sigma = sigma
        return x


def test_input_noise_is_the_noisier_view():
    # The guide sees x + r sigma n and is told sigma sqrt(1 + r^2) (a noisier view of the same sample),
    # n standard normal, fresh for every sample, deterministic, and independent of the batch.
    rec, r = _Recorder(), 0.5
    g = InputNoiseGuide(rec, r, seed=0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.1, 1.0, 2.0, 5.0])
    seen = g(x, sigma)
    torch.testing.assert_close(rec.sigma, sigma * (1 + r**2) ** 0.5)
    n = (seen - x) / (r * sigma[:, None, None, None])
    assert abs(float(n.mean())) < 0.05 and abs(float(n.std()) - 1) < 0.05
    assert not torch.allclose(n[0], n[1])  # not one noise field shared by every sample
    torch.testing.assert_close(g(x[2:3], sigma[2:3]), seen[2:3], rtol=0, atol=0)  # batch independent
    assert torch.equal(g(x, sigma), seen)  # a fixed function of its input
    assert not torch.equal(InputNoiseGuide(rec, r, seed=1)(x, sigma), seen)
    # "Raised by 10%": sigma' = 1.1 sigma.
    InputNoiseGuide.raised_by(rec, 0.1)(x, sigma)
    torch.testing.assert_close(rec.sigma, sigma * 1.1)


def test_skipped_block_is_its_skip_path(net):
    # Skipping every decoder block at the lowest level and the attention block changes the output
    # but keeps its shape; unknown names are one-line errors listing real block names.
    names = block_names(net)
    assert "unet.dec.4x4_in0" in names
    with pytest.raises(UserInputError, match="no module named 'unet.nope'"):
        SkipBlocksGuide(net, ["unet.nope"])


def test_bad_specs():
    n = build(preset_config("xxs", 8, 1, 0))
    for spec, msg in [
        ("dropout", "KIND:VALUE"),
        ("blur:1", "KIND:VALUE"),
        ("dropout:x", "not a number"),
        ("dropout:1.5", r"\[0, 1\)"),
        ("quantize:1", "bits"),
        ("precision:fp8", "unknown dtype"),
    ]:
        with pytest.raises(UserInputError, match=msg):
            weak_guide(n, spec)


def test_quantized_weights_levels(net):
    g = QuantizedGuide(net, 3)
    w = g.net.unet.out_conv.weight
    row = w[0].flatten()
    assert len(torch.unique(row)) <= 7  # 2^(3-1) - 1 = 3 levels each side, and 0
    assert g.net is not net and net.unet.out_conv.weight.data_ptr() != w.data_ptr()


def test_low_precision_close_to_fp32(net):
    main = _eval(net)
    for dt, tol in [(torch.bfloat16, 5e-2), (torch.float16, 5e-3)]:
        out = _eval(LowPrecision(net, dt))
        assert out.dtype == torch.float32
        assert (out - main).abs().max() < tol * main.abs().max()


def test_weak_guide_in_generate_images(net):
    # A training-free guide plugs into generation as a guide network; w = 1 is the unguided run.
    guide = DropoutGuide(net, 0.1, seed=0)
    kw = dict(sampler=SamplerSettings(steps=3), batch_size=2)
    plain, _ = generate_images(net, [0, 1], **kw)
    same, _ = generate_images(guided(net, guide, 1.0), [0, 1], **kw)
    with_guide, _ = generate_images(guided(net, guide, 2.5), [0, 1], **kw)
    again, _ = generate_images(guided(net, DropoutGuide(net, 0.1, seed=0), 2.5), [0, 1], **kw)
    assert torch.equal(plain, same) and torch.equal(with_guide, again) and not torch.equal(plain, with_guide)
