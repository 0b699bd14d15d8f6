"""LoRA guides that share the main model's weights: a guide at the main model's own scale changes
nothing, switching adapters leaves the main model bit-identical, no second copy of the base weights,
the base-alone guide is the base network exactly, and LoRAs that do not fit are refused in one line.
LoRA adapters are made in the test with peft and saved in diffusers' format."""

import pytest
import torch

pytest.importorskip("peft")
import tiny_pipelines as tiny  # noqa: E402

from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.guides import weak_guide  # noqa: E402
from autoguidance.wrappers.lora import Adapters, load_lora, lora_views, parameter_bytes  # noqa: E402
from autoguidance.wrappers.text_generate import TextModels, TextSettings, generate_text  # noqa: E402
from autoguidance.wrappers.text_pipelines import load_text_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ATTR = {"sd": "unet", "sd3": "transformer"}


@pytest.fixture(scope="module", params=["sd", "sd3"])
def saved(request, tmp_path_factory):
    """A tiny pipeline folder of the family and two LoRA folders for its network (a, b)."""
    fam = request.param
    root = tmp_path_factory.mktemp(f"lora-{fam}")
    pipe = tiny.BUILDERS[fam](0)
    net = getattr(pipe, ATTR[fam])
    pipe.save_pretrained(root / "pipe")
    tiny.save_lora(pipe, ATTR[fam], tiny.lora_state(net, 1), root / "a")
    tiny.save_lora(pipe, ATTR[fam], tiny.lora_state(net, 2), root / "b")
    return fam, root


def _settings(**kw):
    base = {"prompt": "a red cat", "seeds": [1, 2], "steps": 3, "batch_size": 2, "max_sequence_length": 8}
    return TextSettings(**{**base, **kw})


def _inputs(tp):
    from autoguidance.wrappers.text import encode_prompt

    cond, null = encode_prompt(
        tp.family.name, tp.pipe, "a red cat", height=16, width=16, max_sequence_length=8
    )
    tp.denoiser.null_cond = null
    x = torch.randn(2, *tp.sample_shape(), generator=torch.Generator().manual_seed(4))
    return x, torch.tensor([0.7, 3.0]), cond


def test_guide_at_the_main_scale_changes_nothing(saved):
    fam, root = saved
    tp = load_text_pipeline(root / "pipe")
    setup = lora_views(tp, str(root / "a"), 0.8, guide_lora_scale=0.8)
    plain = generate_text(TextModels(tp, setup.main), _settings())[1]
    same = generate_text(TextModels(tp, setup.main, setup.guide), _settings(guidance=3.0))[1]
    assert torch.equal(plain, same)
    weaker = lora_views(tp, str(root / "a"), 0.8, guide_lora_scale=0.2)  # a second adapter, same base
    guided = generate_text(TextModels(tp, weaker.main, weaker.guide), _settings(guidance=3.0))[1]
    assert (guided - plain).abs().max() > 1e-4


def test_switching_adapters_leaves_the_main_model_bit_identical(saved):
    fam, root = saved
    tp = load_text_pipeline(root / "pipe")
    setup = lora_views(tp, str(root / "a"), 1.0, guide_lora=str(root / "b"), guide_lora_scale=0.5)
    x, s, cond = _inputs(tp)
    with torch.no_grad():
        before = setup.main(x, s, cond)
        g = setup.guide(x, s, cond)
        after = setup.main(x, s, cond)
        assert setup.switch.current == setup.main.adapters  # restored after the guide's evaluation
        g_again = setup.guide(x, s, cond)
        again = setup.main(x, s, cond)
    assert torch.equal(before, after) and torch.equal(before, again) and torch.equal(g, g_again)
    assert (before - g).abs().max() > 1e-4
    assert setup.guide.adapters == Adapters.of({"guide": 0.5}) and setup.main.adapters == Adapters.of(
        {"main": 1}
    )


def test_base_alone_guide_is_the_base_network(saved):
    fam, root = saved
    tp = load_text_pipeline(root / "pipe")
    setup = lora_views(tp, str(root / "a"), 1.0, guide_lora_scale=0.0)
    assert setup.guide.adapters == Adapters()  # scale 0: adapters off
    plain_tp = load_text_pipeline(root / "pipe")  # the same base without any LoRA loaded
    x, s, cond = _inputs(tp)
    _inputs(plain_tp)
    with torch.no_grad():
        assert torch.equal(setup.guide(x, s, cond), plain_tp.denoiser(x, s, cond))
        assert (setup.main(x, s, cond) - setup.guide(x, s, cond)).abs().max() > 1e-4


def test_a_lora_guide_adds_no_copy_of_the_base_weights(saved):
    fam, root = saved
    tp = load_text_pipeline(root / "pipe")
    base_bytes = parameter_bytes(tp.network)
    base_ptrs = {p.untyped_storage().data_ptr() for p in tp.network.parameters()}
    setup = lora_views(tp, str(root / "a"), 1.0, guide_lora=str(root / "b"))
    lora_bytes = sum(p.untyped_storage().nbytes() for n, p in tp.network.named_parameters() if "lora_" in n)
    both = parameter_bytes(setup.main, setup.guide)
    assert both == parameter_bytes(tp.network) == base_bytes + lora_bytes
    assert lora_bytes < 0.2 * base_bytes
    guide_ptrs = {
        p.untyped_storage().data_ptr() for n, p in setup.guide.named_parameters() if "lora_" not in n
    }
    assert guide_ptrs == base_ptrs  # the guide's base weights are the main model's storage


def test_a_weak_guide_made_before_the_lora_degrades_it_too(saved):
    # Hooks are attached per evaluation, at the query projections the network has then (a LoRA replaces
    # them by its own layers): a guide made before the LoRA is loaded equals one made after.
    fam, root = saved
    tp = load_text_pipeline(root / "pipe")
    early = weak_guide(tp.denoiser, "attention:0.3", root=tp.network)
    setup = lora_views(tp, str(root / "a"), 1.0)
    late = weak_guide(setup.main, "attention:0.3", root=tp.network)
    x, s, cond = _inputs(tp)
    with torch.no_grad():
        degraded, main = late(x, s, cond), setup.main(x, s, cond)
        assert torch.equal(early(x, s, cond), degraded) and (degraded - main).abs().max() > 1e-5


def test_loras_that_do_not_fit_are_refused(saved, tmp_path):
    fam, root = saved
    tp = load_text_pipeline(root / "pipe")
    if fam == "sd":  # other cross-attention width: shapes differ
        other = tiny.sd(0, cross=32)
        tiny.save_lora(other, "unet", tiny.lora_state(other.unet, 3), tmp_path / "wide")
        with pytest.raises(UserInputError, match="does not fit"):
            load_lora(tp, str(tmp_path / "wide"), "x")
        sd3 = tiny.sd3(0)  # a transformer's LoRA: nothing for the UNet
        tiny.save_lora(sd3, "transformer", tiny.lora_state(sd3.transformer, 3), tmp_path / "other")
        with pytest.raises(UserInputError, match="no weights for the UNet2DConditionModel"):
            load_lora(tp, str(tmp_path / "other"), "y")
    else:  # a transformer LoRA with more layers than this network has
        deeper = tiny.sd3_transformer(0, layers=3)
        tiny.save_lora(tiny.sd3(0), "transformer", tiny.lora_state(deeper, 3), tmp_path / "deep")
        with pytest.raises(UserInputError, match="does not fit"):
            load_lora(tp, str(tmp_path / "deep"), "x")
    with pytest.raises(UserInputError, match="no such file"):
        load_lora(tp, str(tmp_path / "missing.safetensors"), "z")
    with pytest.raises(UserInputError, match="needs --lora"):
        lora_views(tp, None, guide_lora_scale=0.5)
