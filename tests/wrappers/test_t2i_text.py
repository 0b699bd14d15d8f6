"""Text conditioning through the denoiser, for each family (tiny random pipelines built in the test):
the prompt embedding is `cond`, the negative prompt is CFG's unconditional branch, the guide gets the
main model's conditioning and the text encoder runs once; w = 1 is the unguided run bit for bit; the
paper's several-terms formula and its alpha interpolation; the guidance interval per sampler step; the
Figure 5-6 grid; IF's dynamic thresholding."""

import pytest
import torch

pytest.importorskip("peft")
import tiny_pipelines as tiny  # noqa: E402
from tiny_pipelines import text_pipeline as _text_pipeline  # noqa: E402

from autoguidance.denoiser import sampler_step  # noqa: E402
from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.guidance import interpolated  # noqa: E402
from autoguidance.wrappers.diffusers import schedule_from_scheduler  # noqa: E402
from autoguidance.wrappers.sigmas import sampler_sigmas, scheduler_sigmas  # noqa: E402
from autoguidance.wrappers.text import encode_prompt, expand_cond  # noqa: E402
from autoguidance.wrappers.text_generate import (  # noqa: E402
    TextModels,
    TextSettings,
    generate_text,
    interpolation_grid,
    prepare,
    sample_seeds,
    term_weights,
    text_guided,
)
from autoguidance.wrappers.thresholding import Clip, Thresholded  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["sd", "sdxl", "if", "sd3"])
def pair(request):
    """(main, guide) of one family: two tiny networks of different seeds, the guide without text parts."""
    fam = request.param
    return _text_pipeline(fam, 0), _text_pipeline(fam, 1)


def _settings(**kw):
    base = {"prompt": "a red cat", "seeds": [3, 4], "steps": 3, "batch_size": 2, "max_sequence_length": 8}
    return TextSettings(**{**base, **kw})


def test_prompt_is_cond_and_negative_is_the_null_branch(pair):
    main, _ = pair
    cond, null = encode_prompt(
        main.family.name, main.pipe, "a red cat", "blue", height=16, width=16, max_sequence_length=8
    )
    main.denoiser.null_cond = null
    x = torch.randn(2, *main.sample_shape(), generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        d_pos, d_none, d_neg = main.denoiser(x, s, cond), main.denoiser(x, s, None), main.denoiser(x, s, null)
    assert d_pos.shape == x.shape and torch.isfinite(d_pos).all()
    assert torch.equal(d_none, d_neg)  # cond=None is the negative prompt's embedding
    assert (d_pos - d_neg).abs().max() > 1e-6  # and the prompt matters
    # One embedding row serves the whole batch: the same as giving it per sample.
    with torch.no_grad():
        per_row = main.denoiser(x, s, expand_cond(cond, 2))
    torch.testing.assert_close(per_row, d_pos, rtol=0, atol=0)
    if main.family.name == "sdxl":
        assert cond["added_cond_kwargs"]["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]]


def test_w1_is_the_unguided_run_bit_for_bit(pair):
    main, guide = pair
    models = TextModels(main, main.denoiser, guide.denoiser)
    _, plain, prepared = generate_text(TextModels(main, main.denoiser), _settings())
    _, w1, _ = generate_text(models, _settings(guidance=1.0, cfg=1.0))
    _, a1, _ = generate_text(models, _settings(guidance=1.0, alpha=0.5))
    assert torch.equal(plain, w1) and torch.equal(plain, a1)
    _, g, _ = generate_text(models, _settings(guidance=2.0, cfg=1.5))
    assert torch.isfinite(g).all() and (g - plain).abs().max() > 1e-4
    # each seed's image is its own, whatever the batch: up to the network's float noise across batch sizes
    # (~1e-6 in eps), which D = x - sigma eps scales by sigma (up to 80) and guidance extrapolates
    _, one, _ = generate_text(models, _settings(guidance=2.0, cfg=1.5, seeds=[4], batch_size=1))
    torch.testing.assert_close(one[0], g[1], rtol=0, atol=2e-2)
    assert (g[0] - g[1]).abs().max() > 0.1


def test_guide_gets_the_main_conditioning_and_the_text_encoder_runs_once():
    main, guide = _text_pipeline("sd", 0), _text_pipeline("sd", 1)
    calls = []
    main.pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    seen = {"main": [], "guide": []}

    def spy(name, den):
        def f(x, sigma, cond=None):
            seen[name].append(cond)
            return den(x, sigma, cond)

        return f

    models = TextModels(main, spy("main", main.denoiser), spy("guide", guide.denoiser))
    generate_text(models, _settings(guidance=2.0, cfg=3.0))
    assert len(calls) == 2  # the prompt and the negative prompt, once for the whole run
    cond_ids = {id(c) for c in seen["guide"]}
    assert len(cond_ids) == 1 and None not in cond_ids  # the guide: always the prompt's embedding
    assert id(seen["guide"][0]) in {id(c) for c in seen["main"]}  # the very object the main model gets
    assert None in {id(c) if c is not None else None for c in seen["main"]}  # CFG: main on null_cond


def test_several_terms_formula_and_interpolation():
    main, guide = _text_pipeline("sd", 0), _text_pipeline("sd", 1)
    cond, null = encode_prompt("sd", main.pipe, "a red cat")
    main.denoiser.null_cond = null
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    s = torch.tensor([1.0, 1.0])
    with torch.no_grad():
        d1, du, dg = main.denoiser(x, s, cond), main.denoiser(x, s, None), guide.denoiser(x, s, cond)
        both = text_guided(main.denoiser, guide.denoiser, guidance=2.5, cfg=1.75)(x, s, cond)
        # D = D1 + (w_ag - 1)(D1 - D_guide) + (w_cfg - 1)(D1 - D_uncond)  (paper, "several terms")
        torch.testing.assert_close(both, d1 + 1.5 * (d1 - dg) + 0.75 * (d1 - du))
        w, alpha = 3.0, 0.25
        w_cfg, w_ag = term_weights(w, 1.0, alpha)
        assert (w_cfg, w_ag) == ((1 - alpha) * (w - 1) + 1, alpha * (w - 1) + 1)
        a = text_guided(main.denoiser, guide.denoiser, guidance=w, alpha=alpha)(x, s, cond)
        b = text_guided(main.denoiser, guide.denoiser, guidance=w_ag, cfg=w_cfg)(x, s, cond)
        c = interpolated(main.denoiser, main.denoiser, guide.denoiser, w, alpha)(x, s, cond)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert torch.equal(a, c)
    with pytest.raises(UserInputError):
        term_weights(2.0, 1.5, 0.5)  # with alpha, --cfg is implied
    with pytest.raises(UserInputError):
        text_guided(main.denoiser, None, guidance=2.0)


def test_guidance_interval_per_sampler_step():
    main, guide = _text_pipeline("sd", 0), _text_pipeline("sd", 1)
    models = TextModels(main, main.denoiser, guide.denoiser)
    base = _settings(guidance=2.0, cfg=2.0, steps=4)
    _, plain, prepared = generate_text(TextModels(main, main.denoiser), _settings(steps=4))
    _, full, _ = generate_text(models, base)
    _, none, _ = generate_text(models, _settings(guidance=2.0, cfg=2.0, steps=4, interval=(20.0, 30.0)))
    assert torch.equal(none, plain)  # no step's sigma inside: the main model alone
    sig = prepared.sigmas
    lo, hi = float(sig[2]) * 0.99, float(sig[1]) * 1.01  # steps 1 and 2 guided
    _, part, _ = generate_text(models, _settings(guidance=2.0, cfg=2.0, steps=4, interval=(lo, hi)))
    assert (part - plain).abs().max() > 1e-4 and (part - full).abs().max() > 1e-4
    # decided per step by the core, from the sampler's step (its context): the guide and the negative
    # prompt's branch are evaluated at steps 1 and 2 only, even when wrapped (IF's thresholding wrapper)
    calls = []

    def spy(x, sigma, cond=None):
        calls.append(cond)
        return guide.denoiser(x, sigma, cond)

    den = Thresholded(text_guided(main.denoiser, spy, 2.0, 2.0, interval=(lo, hi)), Clip(True))
    x, s = torch.randn(1, 4, 8, 8), torch.full((1,), float(sig[2]))  # the Heun correction's sigma
    with torch.no_grad():
        for i, expected in ((0, 0), (1, 1), (2, 1), (3, 0)):
            calls.clear()
            with sampler_step(float(sig[i])):
                den(x, s, prepared.cond)
            assert len(calls) == expected, i


def test_interpolation_grid_rows_and_columns():
    main, guide = _text_pipeline("if", 0), _text_pipeline("if", 1)
    models = TextModels(main, main.denoiser, guide.denoiser)
    grid, prepared = interpolation_grid(models, _settings(seeds=[7]), ws=[1.0, 3.0], alphas=[0.0, 0.5, 1.0])
    assert grid.cells.shape == (2, 3, 8, 8, 3) and grid.cells.dtype == torch.uint8
    plain = sample_seeds(main.denoiser, prepared, [7])[0]
    for k in range(3):
        assert torch.equal(grid.samples[0, k], plain)  # w = 1: unguided whatever alpha
    cfg_only = sample_seeds(text_guided(main.denoiser, None, cfg=3.0), prepared, [7])[0]
    ag_only = sample_seeds(text_guided(main.denoiser, guide.denoiser, guidance=3.0), prepared, [7])[0]
    torch.testing.assert_close(grid.samples[1, 0], cfg_only, rtol=1e-6, atol=1e-6)  # alpha 0: CFG
    torch.testing.assert_close(grid.samples[1, 2], ag_only, rtol=1e-6, atol=1e-6)  # alpha 1: autoguidance
    assert grid.labelled(scale=2).shape[2] == 3
    with pytest.raises(UserInputError, match="one seed"):
        interpolation_grid(models, _settings(seeds=[1, 2]))


def test_if_dynamic_thresholding():
    main = _text_pipeline("if", 0)
    prepared = prepare(TextModels(main, main.denoiser), _settings(), "cpu")
    assert prepared.clip == Clip(True, 0.95, 1.5)  # IF's scheduler config asks for it
    x0 = torch.tensor([[[[0.5, -0.2, 0.1, 0.3]]], [[[3.0, -2.0, 0.5, 0.1]]]])
    out = Clip(True, 0.5, 1.5)(x0)
    torch.testing.assert_close(out[0], x0[0])  # s = 1 inside the data range: unchanged
    assert out[1].abs().max() <= 1.0 + 1e-6
    assert Clip(False, max_value=1.0)(x0).abs().max() == 1.0
    t = Thresholded(text_guided(main.denoiser, main.denoiser, 2.0), Clip(True))
    assert t.signature == main.denoiser.signature and t.signature.conditioning == "text"
    assert (
        _text_pipeline("sd").denoiser is not None
        and prepare(  # latent models: no clipping by default
            TextModels(_text_pipeline("sd"), _text_pipeline("sd").denoiser), _settings(), "cpu"
        ).clip
        is None
    )


def test_scheduler_sigmas_of_a_ddpm_scheduler():
    pipe = tiny.deepfloyd_if(0)
    _, schedule, _ = schedule_from_scheduler(pipe.scheduler)
    sig = scheduler_sigmas(pipe.scheduler, 5, schedule)
    ab = pipe.scheduler.alphas_cumprod.double()[pipe.scheduler.timesteps]
    torch.testing.assert_close(sig[:-1], ((1 - ab) / ab).sqrt(), rtol=1e-6, atol=0)
    assert sig[-1] == 0 and len(sig) == 6
    edm = sampler_sigmas("edm", 5, schedule)
    assert float(edm[0]) == 80.0 and abs(float(edm[-2]) - schedule.sigma_min) < 1e-9
    with pytest.raises(UserInputError):
        sampler_sigmas("karras", 5, schedule)


def test_image_size_checks():
    main = _text_pipeline("sd", 0)
    assert main.default_size() == (16, 16) and main.sample_shape(32, 16) == (4, 16, 8)
    with pytest.raises(UserInputError, match="multiple of 4"):
        main.sample_shape(18, 16)
    sd3 = _text_pipeline("sd3", 0)
    assert sd3.image_seq_len(sd3.sample_shape()) == 16
