"""Training-free guides on text-to-image networks: skipped blocks by name and a degraded (smoothed)
self-attention, on a UNet (SD), IF's added-KV attention UNet and SD3's joint-attention transformer.
Zero degradation equals the main network exactly; a degraded guide differs; the main network, which
shares the modules, is left untouched, and no hook stays attached after a guide's evaluation. The guides
are the package's own (`guides`: one SkipBlocksGuide for EDM2 and diffusers blocks, the attention guide),
named by the diffusers network's own module names (`root`)."""

import pytest
import torch

pytest.importorskip("peft")
from tiny_pipelines import text_pipeline as _text_pipeline  # noqa: E402

from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.guides import (  # noqa: E402
    AttentionTemperatureGuide,
    SkipBlocksGuide,
    block_names,
    weak_guide,
)
from autoguidance.wrappers.text import encode_prompt  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SKIP = {"sd": "down_blocks.1.attentions.0", "if": "mid_block.resnets.0", "sd3": "transformer_blocks.1"}


@pytest.fixture(scope="module", params=["sd", "if", "sd3"])
def model(request):
    tp = _text_pipeline(request.param, 0)
    cond, null = encode_prompt(
        tp.family.name, tp.pipe, "a red cat", height=16, width=16, max_sequence_length=8
    )
    tp.denoiser.null_cond = null
    x = torch.randn(2, *tp.sample_shape(), generator=torch.Generator().manual_seed(3))
    return tp, (x, torch.tensor([0.5, 4.0]), cond)


def _eval(den, inputs):
    with torch.no_grad():
        return den(*inputs)


def test_zero_degradation_is_the_main_network(model):
    tp, inputs = model
    main = _eval(tp.denoiser, inputs)
    for spec in ("attention:1", "input-noise:0", "dropout:0"):
        assert torch.equal(_eval(weak_guide(tp.denoiser, spec, root=tp.network), inputs), main), spec


@pytest.mark.parametrize("spec", ["attention:0.3", "attention:0", "skip"])
def test_degraded_guides_differ_and_leave_the_main_model_alone(model, spec):
    tp, inputs = model
    if spec == "skip":
        spec = f"skip:{SKIP[tp.family.name]}"
    main = _eval(tp.denoiser, inputs)
    guide = weak_guide(tp.denoiser, spec, root=tp.network)
    a, b = _eval(guide, inputs), _eval(guide, inputs)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert (a - main).abs().max() > 1e-5
    assert torch.equal(_eval(tp.denoiser, inputs), main)  # the hooks act only inside the guide
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tp.network.modules())


def test_attention_targets_self_attention_only():
    tp = _text_pipeline("sd", 0)
    g = AttentionTemperatureGuide(tp.denoiser, 0.5, root=tp.network)
    assert g.targets and all(n.endswith("attn1") for n in g.targets)  # cross-attention to the prompt: kept
    only = AttentionTemperatureGuide(tp.denoiser, 0.5, ["up_blocks.0"], root=tp.network)
    assert only.targets and all(n.startswith("up_blocks.0.") for n in only.targets)
    sd3 = _text_pipeline("sd3", 0)
    joint = AttentionTemperatureGuide(sd3.denoiser, 0.5, root=sd3.network)
    assert joint.targets == ["transformer_blocks.0.attn", "transformer_blocks.1.attn"]
    # without a root the names are the denoiser's own (the network is its `model`)
    assert AttentionTemperatureGuide(sd3.denoiser, 0.5).targets[0] == "model.transformer_blocks.0.attn"


def test_bad_weak_guide_specs():
    tp = _text_pipeline("sd", 0)
    names = block_names(tp.network)
    assert "down_blocks.1.attentions.0" in names and "mid_block.attentions.0" in names
    assert "down_blocks.1.resnets.0" not in names  # 8 -> 16 channels: no identity skip path
    with pytest.raises(UserInputError, match="no module named"):
        SkipBlocksGuide(tp.denoiser, ["nope"], root=tp.network)
    with pytest.raises(UserInputError, match="not a skippable block"):
        SkipBlocksGuide(tp.denoiser, ["down_blocks.1.resnets.0"], root=tp.network)
    with pytest.raises(UserInputError, match="not a skippable block"):
        weak_guide(tp.denoiser, "skip:down_blocks.1.attentions.0.transformer_blocks.0.attn1", root=tp.network)
    with pytest.raises(UserInputError, match="TAU must lie"):
        weak_guide(tp.denoiser, "attention:2", root=tp.network)
    with pytest.raises(UserInputError, match="expected KIND:VALUE"):
        weak_guide(tp.denoiser, "blur:3", root=tp.network)
    with pytest.raises(UserInputError, match="not a number"):
        weak_guide(tp.denoiser, "attention:x", root=tp.network)
