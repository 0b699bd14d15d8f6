"""diffusers models as EDM denoisers: tiny random UNet and DiT transformer, eps / v / flow, guided by a
second tiny model; the VAE path with a tiny random AutoencoderKL; parameterisation identities."""

import math

import pytest
import torch

pytest.importorskip("diffusers")  # in the test extra; skip only outside it
from diffusers import DDPMScheduler, DiTTransformer2DModel, UNet2DModel  # noqa: E402

from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.generate import generate_images  # noqa: E402
from autoguidance.guidance import GuidedDenoiser, GuideTerm, autoguidance  # noqa: E402
from autoguidance.sampling import SamplerSettings  # noqa: E402
from autoguidance.wrappers.diffusers import (  # noqa: E402
    DiffusersDenoiser,
    from_pipeline,
    schedule_from_scheduler,
)
from autoguidance.wrappers.latents import EDM2_RAW_MEAN, EDM2_RAW_STD, LatentCodec  # noqa: E402
from autoguidance.wrappers.parameterization import (  # noqa: E402
    CosineVP,
    DiscreteVP,
    LinearVP,
    PredictionDenoiser,
    RectifiedFlow,
)
from untrained import tiny_vae  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _ddpm_alphas(n=1000):
    return DDPMScheduler(num_train_timesteps=n).alphas_cumprod


def _unet(seed, classes=None):
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=classes,
    ).eval()


def _dit(seed, learn_sigma=False):
    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8 if learn_sigma else 4,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_num_groups=4,
    ).eval()


# --- parameterisation identities (ground truth: exact x0 recovers x0) -----------------------------------


@pytest.mark.parametrize("schedule", [DiscreteVP(_ddpm_alphas()), LinearVP(), CosineVP()])
def test_vp_timestep_roundtrip(schedule):
    sig = torch.tensor(
        [schedule.sigma_min * 1.01, 0.3, 1.0, 5.0, schedule.sigma_max * 0.99], dtype=torch.float64
    )
    torch.testing.assert_close(
        schedule.sigma(schedule.timestep(sig)).to(torch.float64), sig, rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("prediction", ["eps", "v", "sample", "flow"])
def test_oracle_model_gives_exact_x0(prediction):
    """A model returning the true eps / v / velocity / x0 for a known (x0, eps) makes D = x0 exactly."""
    schedule = RectifiedFlow() if prediction == "flow" else DiscreteVP(_ddpm_alphas())
    x0, eps = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.05, 1.0, 7.0], dtype=torch.float64)
    s = sigma[:, None, None, None]

    def oracle(x_t, t, cond):
        if prediction == "eps":
            return eps
        if prediction == "sample":
            return x0
        if prediction == "v":  # v = sqrt(ab) eps - sqrt(1 - ab) x0, ab = 1 / (1 + s^2)
            return (eps - s * x0) / (1 + s**2).sqrt()
        # flow: x_t = (1 - t) x0 + t eps with t = s / (1 + s) must be what the model was given
        torch.testing.assert_close(x_t, (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps)
        return eps - x0

    d = PredictionDenoiser(oracle, prediction, schedule)
    torch.testing.assert_close(d(x0 + s * eps, sigma), x0)


def test_discrete_timesteps_match_table():
    ab = _ddpm_alphas()
    sched = DiscreteVP(ab)
    t = torch.tensor([0.0, 10.0, 999.0], dtype=torch.float64)
    sig = ((1 - ab[t.long()].double()) / ab[t.long()].double()).sqrt()
    torch.testing.assert_close(sched.timestep(sig), t)
    assert (
        DiscreteVP(ab, quantize=True).timestep(torch.tensor([sched.sigma(torch.tensor(10.4)).item()])).item()
        == 10
    )


def test_unknown_prediction_refused():
    sched = DDPMScheduler(num_train_timesteps=100, prediction_type="epsilon")
    sched.register_to_config(prediction_type="score")
    with pytest.raises(UserInputError, match="unknown prediction_type 'score'"):
        schedule_from_scheduler(sched)
    with pytest.raises(UserInputError):
        PredictionDenoiser(lambda *a: a[0], "x-start", RectifiedFlow())


# --- sampling tiny diffusers models ---------------------------------------------------------------------


def _sample(den, shape, cond=None, steps=4):
    """Heun samples (raw floats) of seeds 3 and 4 through the one generation loop."""
    sampler = SamplerSettings(steps=steps, sigma_min=0.05, sigma_max=10.0)
    kwargs = dict(shape=shape, cond=cond, sampler=sampler, batch_size=2, decode=_raw)
    images, _ = generate_images(den, [3, 4], **kwargs)
    return images


def _raw(x):
    return x


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_unet_guided_by_second_unet(prediction):
    sched = DiscreteVP(_ddpm_alphas())
    main = DiffusersDenoiser(_unet(0, classes=3), prediction, sched)
    guide = DiffusersDenoiser(_unet(1, classes=3), prediction, sched)
    labels = torch.tensor([0, 2])
    plain = _sample(main, (3, 8, 8), labels)
    assert torch.isfinite(plain).all()
    torch.testing.assert_close(
        _sample(autoguidance(main, guide, 1.0), (3, 8, 8), labels), plain, rtol=0, atol=0
    )
    g1 = _sample(autoguidance(main, guide, 2.0), (3, 8, 8), labels)
    g2 = _sample(autoguidance(main, guide, 2.0), (3, 8, 8), labels)
    assert (g1 - plain).abs().max() > 1e-3
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("prediction", "schedule"), [("flow", RectifiedFlow()), ("eps", DiscreteVP(_ddpm_alphas()))]
)
def test_dit_transformer_with_cfg_and_autoguidance(prediction, schedule):
    """A class-conditional DiT (learned sigma for eps) guided by a second DiT and by its own null class."""
    scale = 1000.0 if prediction == "flow" else 1.0
    null = torch.tensor([9, 9])  # DiT's extra "no class" embedding serves the unconditional branch
    main = DiffusersDenoiser(
        _dit(0, learn_sigma=prediction == "eps"), prediction, schedule, timestep_scale=scale, null_cond=null
    )
    weak = DiffusersDenoiser(
        _dit(1, learn_sigma=prediction == "eps"), prediction, schedule, timestep_scale=scale
    )
    labels = torch.tensor([1, 4])
    plain = _sample(main, (4, 8, 8), labels)
    torch.testing.assert_close(
        _sample(autoguidance(main, weak, 1.0), (4, 8, 8), labels), plain, rtol=0, atol=0
    )
    from autoguidance.denoiser import without_condition

    both = GuidedDenoiser(main, [GuideTerm(weak, 1.5), GuideTerm(without_condition(main), 1.5)])
    out = _sample(both, (4, 8, 8), labels)
    assert (out - plain).abs().max() > 1e-3 and torch.isfinite(out).all()
    torch.testing.assert_close(_sample(both, (4, 8, 8), labels), out, rtol=0, atol=0)


def test_text_like_conditioning_passes_through():
    seen = {}

    def model(x_t, t, cond):
        seen.update(cond)
        return torch.zeros_like(x_t)

    den = PredictionDenoiser(model, "eps", LinearVP(), null_cond={"emb": torch.zeros(1, 7)})
    emb = torch.randn(2, 7)
    den(torch.randn(2, 3, 4, 4), torch.ones(2), {"emb": emb})
    assert seen["emb"] is emb
    den(torch.randn(2, 3, 4, 4), torch.ones(2), None)
    assert seen["emb"].abs().sum() == 0


def test_vae_path_edm2_normalisation():
    vae = tiny_vae(0)
    codec = LatentCodec.edm2(vae)
    images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    z = codec.encode(images)
    assert z.shape == (2, 4, 8, 8)
    with torch.no_grad():
        raw = vae.encode(images.permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mean
    mean, std = (
        torch.tensor(EDM2_RAW_MEAN)[None, :, None, None],
        torch.tensor(EDM2_RAW_STD)[None, :, None, None],
    )
    torch.testing.assert_close(z, (raw - mean) / std * 0.5, rtol=1e-5, atol=1e-5)
    decoded = codec.decode(z)
    with torch.no_grad():
        direct = (
            ((vae.decode(raw).sample + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        )
    assert decoded.dtype == torch.uint8 and (decoded.int() - direct.int()).abs().max() <= 1
    # Sampling a latent DiT and decoding through the VAE gives images.
    den = DiffusersDenoiser(_dit(0), "flow", RectifiedFlow(), timestep_scale=1000.0)
    sampler = SamplerSettings(steps=3, sigma_min=0.05, sigma_max=10.0)
    imgs, _ = generate_images(
        den, [0, 1], shape=(4, 8, 8), cond=torch.tensor([1, 2]), sampler=sampler, decode=codec.decode
    )
    assert imgs.shape == (2, 16, 16, 3) and imgs.dtype == torch.uint8


def test_pipeline_parts_and_mismatched_guide():
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline(
        unet=_unet(0), scheduler=DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")
    )
    parts = from_pipeline(pipe)
    assert parts.denoiser.prediction == "v" and parts.sample_shape == (3, 8, 8) and parts.codec is None
    assert math.isclose(
        parts.denoiser.schedule.sigma_max,
        float(pipe.scheduler.sigmas.max())
        if hasattr(pipe.scheduler, "sigmas")
        else parts.denoiser.schedule.sigma_max,
    )
    from autoguidance.denoiser import Signature
    from autoguidance.guidance import guided

    assert parts.denoiser.signature == Signature((3, 8, 8), 0)
    other = DiffusersDenoiser(_unet(1), "v", parts.denoiser.schedule)
    other.signature = Signature((4, 8, 8), 0)
    with pytest.raises(UserInputError, match="works on 4x8x8 samples, the main model on 3x8x8"):
        guided(parts.denoiser, other, 2.0)


# --- the generate-diffusers command ---------------------------------------------------------------------


def _save_dit_pipeline(path, seed, scheduler):
    from diffusers import DiTPipeline

    DiTPipeline(transformer=_dit(seed), vae=tiny_vae(0), scheduler=scheduler).save_pretrained(path)


def _cli(*args):
    from autoguidance.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_generate_diffusers_cli(tmp_path):
    import numpy as np
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
    from PIL import Image

    from autoguidance.cli import main

    _save_dit_pipeline(tmp_path / "main", 0, FlowMatchEulerDiscreteScheduler())
    _save_dit_pipeline(tmp_path / "early", 1, FlowMatchEulerDiscreteScheduler())
    common = [
        "generate-diffusers",
        "--model",
        str(tmp_path / "main"),
        "--seeds",
        "0-1",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--class",
        "3",
    ]
    main([*common, "--out", str(tmp_path / "plain")])
    main([*common, "--guide", str(tmp_path / "early"), "--guidance", "1", "--out", str(tmp_path / "w1")])
    main(
        [
            *common,
            "--guide",
            str(tmp_path / "early"),
            "--guidance",
            "2",
            "--cfg",
            "1.5",
            "--out",
            str(tmp_path / "both"),
        ]
    )

    def png(d):
        return np.asarray(Image.open(tmp_path / d / "seed000001.png"))

    assert png("plain").shape == (16, 16, 3)
    assert np.array_equal(png("plain"), png("w1")) and not np.array_equal(png("plain"), png("both"))
    # An eps pipeline as the guide of a flow pipeline is fine (both are denoisers of the same latents);
    # a scheduler with an unknown prediction type is one line, exit 2, nothing written.
    sched = DDIMScheduler(num_train_timesteps=100)
    sched.register_to_config(prediction_type="score")
    _save_dit_pipeline(tmp_path / "odd", 2, sched)
    assert (
        _cli(*common, "--guide", str(tmp_path / "odd"), "--guidance", "2", "--out", str(tmp_path / "x")) == 2
    )
    assert not (tmp_path / "x").exists()
    assert _cli(*common, "--guidance", "2", "--out", str(tmp_path / "y")) == 2  # no guide
