"""`autoguidance info` without a checkpoint (a preset) and for toy models."""

from __future__ import annotations

import pytest

from autoguidance.cli import main
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config
from autoguidance.toy.checkpoint import save_toy_model
from autoguidance.toy.model import ToyModel, ToyModelConfig
from cli_helpers import fails

pytestmark = pytest.mark.usefixtures("one_thread")


def test_info_preset_without_checkpoint(capsys):
    main(["info", "--preset", "s", "--resolution", "64"])
    text = capsys.readouterr().out
    assert "preset: s at 64x64x3" in text and "channel_mult: [1, 2, 2, 2]" in text
    params = build(preset_config("s", 64, 3, 0))
    assert f"parameters: {sum(p.numel() for p in params.parameters()):,}" in text
    assert "flops_per_evaluation: " in text
    assert "pad the images to 32" in fails(["info", "--preset", "s", "--resolution", "28"], capsys)
    assert "not both" in fails(["info"], capsys)


def test_info_describes_toy_models(tmp_path, capsys):
    model = ToyModel(ToyModelConfig(width=8, depth=2))
    save_toy_model(tmp_path / "toy.safetensors", model, {"iterations": 3})
    main(["info", str(tmp_path / "toy.safetensors")])
    text = capsys.readouterr().out
    # 4 x 8 + 2 x 8 x 8 weights + the gain; forward FLOPs 2 x (4 x 8 + 2 x 64) = 320.
    assert "kind: toy_model" in text and "parameters: 161" in text and "flops_log_density: 320" in text
    assert "iterations: 3" in text
