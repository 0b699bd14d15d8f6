"""EDM2 networks: magnitude preservation, preconditioning formulas, presets, config validation, FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autoguidance.errors import UserInputError
from autoguidance.guidance import autoguidance
from autoguidance.nets.flops import count_parameters, flops_per_evaluation
from autoguidance.nets.mp import MPConv, MPFourier, mp_cat, mp_silu, mp_sum, pixel_norm
from autoguidance.nets.precond import EDM2Denoiser, NetConfig, build
from autoguidance.nets.presets import PRESET_NAMES, ArchitectureOverrides, padded_resolution, preset_config


def rms(t: torch.Tensor) -> float:
    return float(t.detach().pow(2).mean().sqrt())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_config(**overrides) -> NetConfig:
    base = dict(
        img_resolution=8,
        img_channels=1,
        label_dim=10,
        model_channels=8,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
    )
    return NetConfig(**{**base, **overrides})


# --- magnitude-preserving primitives -------------------------------------------------------------------


def test_primitives_keep_unit_magnitude():
    a, b = torch.randn(4096, 64), torch.randn(4096, 32)
    assert rms(MPConv(64, 48)(a)) == pytest.approx(1.0, abs=0.05)
    img = torch.randn(16, 16, 32, 32)
    # Zero padding thins the border a little, hence the looser tolerance for the 3x3 conv.
    assert rms(MPConv(16, 24, kernel=(3, 3))(img)) == pytest.approx(1.0, abs=0.1)
    assert rms(MPConv(16, 24, kernel=(1, 1))(img)) == pytest.approx(1.0, abs=0.05)
    assert rms(mp_sum(a, torch.randn_like(a), t=0.3)) == pytest.approx(1.0, abs=0.03)
    assert rms(mp_cat(a, b, dim=1, t=0.5)) == pytest.approx(1.0, abs=0.03)
    assert rms(mp_cat(a, b, dim=1, t=0.2)) == pytest.approx(1.0, abs=0.03)
    assert rms(mp_silu(torch.randn(100_000))) == pytest.approx(1.0, abs=0.02)
    assert rms(MPFourier(128)(torch.randn(4096))) == pytest.approx(1.0, abs=0.03)
    per_pixel = pixel_norm(img * 7.0, dim=1).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(per_pixel, torch.ones_like(per_pixel), atol=1e-3)


def test_forced_weight_normalisation_in_training():
    conv = MPConv(16, 8, kernel=(3, 3)).train()
    with torch.no_grad():
        conv.weight.mul_(torch.rand(8, 1, 1, 1) * 10)  # rows of very different norms
    conv(torch.randn(2, 16, 8, 8))
    row_rms = conv.weight.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(row_rms, torch.ones(8), atol=1e-3)
    # In eval mode the stored weight is left alone.
    conv.eval()
    with torch.no_grad():
        conv.weight.mul_(3.0)
    before = conv.weight.clone()
    conv(torch.randn(2, 16, 8, 8))
    assert torch.equal(conv.weight, before)


def test_unet_activations_stay_near_unit_magnitude():
    net = build(preset_config("s", 32, 1, 10)).eval()
    seen = []
    for name, block in net.unet.enc.items():
        block.register_forward_hook(lambda m, i, o, name=name: seen.append((name, rms(o))))
    net(torch.randn(8, 1, 32, 32), torch.full((8,), 1.0), torch.arange(8))
    for name, value in seen:
        assert 0.5 < value < 2.0, (name, value)


# --- preconditioning ------------------------------------------------------------------------------------


class StubNet(nn.Module):
    """Records what the preconditioner feeds the network and returns a fixed F."""

    def forward(self, x, noise_labels, class_labels):
        self.seen = (x.clone(), noise_labels.clone(), class_labels)
        return torch.full_like(x, 0.75)


def test_preconditioning_matches_formulas():
    cfg = small_config(sigma_data=0.5)
    net = EDM2Denoiser(cfg, net=StubNet())
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.5, 40.0], dtype=torch.float64)
    cond = torch.tensor([0, 3, 9])
    d = net(x, sigma, cond)
    s, sd = sigma.reshape(-1, 1, 1, 1), 0.5
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    c_in = 1 / torch.sqrt(s**2 + sd**2)
    x_in, c_noise, labels = net.unet.seen
    assert torch.allclose(x_in, c_in * x)
    assert torch.allclose(c_noise, torch.log(sigma) / 4)
    assert torch.equal(labels, torch.nn.functional.one_hot(cond, 10).double())
    assert torch.allclose(d, c_skip * x + c_out * 0.75)


def test_fresh_network_is_skip_only():
    cfg = preset_config("xs", 8, 1, 10)
    net = build(cfg)
    x = torch.randn(4, 1, 8, 8)
    sigma = torch.tensor([0.1, 1.0, 3.0, 50.0])
    cond = torch.tensor([1, 2, 3, 4])
    s = sigma.reshape(-1, 1, 1, 1)
    c_in = 1 / (s**2 + 0.25).sqrt()
    f = net.unet(c_in * x, sigma.log() / 4, torch.nn.functional.one_hot(cond, 10).float())
    assert torch.equal(f, torch.zeros_like(f))  # output gain starts at 0
    d = net(x, sigma, cond)
    assert torch.equal(d, 0.25 / (s**2 + 0.25) * x)


def test_scalar_sigma_and_logvar_shape():
    net = build(small_config(label_dim=0))
    x = torch.randn(5, 1, 8, 8)
    d, logvar = net(x, 0.7, return_logvar=True)
    assert d.shape == x.shape and logvar.shape == (5, 1, 1, 1)
    assert torch.allclose(d, net(x, torch.full((5,), 0.7)))


def test_gradients_reach_output_gain():
    net = build(small_config(dropout=0.1)).train()
    x = torch.randn(4, 1, 8, 8)
    d, u = net(x + torch.randn_like(x), torch.full((4,), 1.0), torch.tensor([0, 1, 2, 3]), return_logvar=True)
    ((d - x) ** 2 / u.exp() + u).mean().backward()
    assert net.unet.out_gain.grad is not None and float(net.unet.out_gain.grad.abs()) > 0


@pytest.mark.parametrize("resolution", [8, 32])
@pytest.mark.parametrize("label_dim", [0, 10])
def test_preset_shapes(resolution, label_dim):
    x = torch.randn(2, 1, resolution, resolution)
    cond = torch.tensor([3, 7]) if label_dim else None
    for name in PRESET_NAMES:
        net = build(preset_config(name, resolution, 1, label_dim))
        with torch.no_grad():
            net.unet.out_gain.fill_(1.0)  # exercise the whole network, not just the skip path
            d = net(x, torch.tensor([0.3, 2.0]), cond)
        assert d.shape == x.shape and torch.isfinite(d).all()


# --- configuration --------------------------------------------------------------------------------------


def test_config_round_trips_through_json():
    cfg = preset_config("m", 32, 1, 10, dropout=0.1)
    again = NetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "change",
    [
        {"model_channels": 0},
        {"model_channels": 8.0},
        {"num_blocks": True},
        {"label_dim": -1},
        {"channel_mult": ()},
        {"channel_mult": (1, 0)},
        {"img_resolution": 6, "channel_mult": (1, 2, 2)},
        {"attn_resolutions": (3,)},
        {"dropout": 1.0},
        {"concat_balance": 1.5},
        {"sigma_data": 0.0},
        {"label_balance": float("nan")},
    ],
)
def test_bad_config_raises(change):
    with pytest.raises(UserInputError):
        small_config(**change)


def test_from_dict_rejects_unknown_and_missing_keys():
    d = small_config().to_dict()
    with pytest.raises(UserInputError, match="unknown network config keys"):
        NetConfig.from_dict({**d, "width": 3})
    del d["num_blocks"]
    with pytest.raises(UserInputError, match="missing"):
        NetConfig.from_dict(d)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UserInputError, match="xxs, xs, s, m"):
        preset_config("huge", 32, 1, 10)
    with pytest.raises(UserInputError, match="resolution 48.*pad the images to 64"):
        preset_config("s", 48, 1, 10)


@pytest.mark.parametrize(
    "resolution, levels, blocks, attn",
    [
        (8, (8, 4), 2, (4,)),
        (16, (16, 8), 1, (8,)),
        (32, (32, 16, 8), 1, (8,)),
        (64, (64, 32, 16, 8), 1, (8,)),
    ],
)
def test_presets_follow_the_rule(resolution, levels, blocks, attn):
    """Levels halve down to 8x8 (4x4 at R = 8), width 1x then 2x, attention at the lowest level."""
    cfg = preset_config("s", resolution, 3, 0)
    assert cfg.resolutions == levels and cfg.num_blocks == blocks and cfg.attn_resolutions == attn
    assert cfg.channel_mult == (1,) + (2,) * (len(levels) - 1)
    x = torch.randn(2, 3, resolution, resolution)
    assert build(cfg)(x, torch.tensor([0.3, 3.0])).shape == x.shape


def test_padded_resolution_and_overrides():
    assert [padded_resolution(s) for s in (5, 8, 9, 28, 32, 33)] == [8, 8, 16, 32, 32, 64]
    cfg = preset_config("s", 64, 3, 0, overrides=ArchitectureOverrides(model_channels=8, num_blocks=2))
    assert cfg.model_channels == 8 and cfg.num_blocks == 2 and cfg.channel_mult == (1, 2, 2, 2)
    # With every architecture field given, any resolution the levels divide works (here 24 -> 12 -> 6).
    full = ArchitectureOverrides(
        model_channels=8, channel_mult=(1, 1, 2), num_blocks=1, attn_resolutions=(6,)
    )
    assert preset_config("xs", 24, 1, 0, overrides=full).resolutions == (24, 12, 6)


def test_conditioning_mismatch_raises():
    x, sigma = torch.randn(2, 1, 8, 8), torch.ones(2)
    with pytest.raises(UserInputError, match="class-conditional"):
        build(small_config())(x, sigma)
    with pytest.raises(UserInputError, match="unconditional"):
        build(small_config(label_dim=0))(x, sigma, torch.tensor([1, 2]))
    with pytest.raises(UserInputError, match=r"\[0, 10\)"):
        build(small_config())(x, sigma, torch.tensor([1, 10]))


# --- guidance and size --------------------------------------------------------------------------------


def test_plugs_into_autoguidance():
    main, guide = build(preset_config("s", 8, 1, 10)), build(preset_config("xxs", 8, 1, 10))
    for net in (main, guide):
        net.eval()
        with torch.no_grad():
            net.unet.out_gain.fill_(1.0)
    x, sigma, cond = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 1.0, 5.0]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        d_main, d_guide = main(x, sigma, cond), guide(x, sigma, cond)
        assert torch.equal(autoguidance(main, guide, 1.0)(x, sigma, cond), d_main)
        guided = autoguidance(main, guide, 2.5)(x, sigma, cond)
    assert torch.allclose(guided, d_guide + 2.5 * (d_main - d_guide), atol=1e-5)


def test_bigger_preset_costs_more():
    sizes = []
    for name in PRESET_NAMES:
        cfg = preset_config(name, 32, 1, 10)
        net = build(cfg)
        sizes.append((count_parameters(net), flops_per_evaluation(net)))
    params, flops = zip(*sizes, strict=True)
    assert list(params) == sorted(set(params)) and list(flops) == sorted(set(flops))
    # Dominated by 3x3 convs: each weight is applied once per pixel of its level (2 FLOPs per
    # multiply-add), so FLOPs per parameter lie between 2 x 4^2 (the 4x4 level) and 2 x 32^2 (full size).
    assert all(2 * 4**2 < f / p < 2 * 32**2 for p, f in sizes)
