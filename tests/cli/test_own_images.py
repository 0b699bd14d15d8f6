"""Your own image folders (64x64 RGB unlabelled, 28x28 grey with dataset.json) through train and generate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autoguidance.cli import main
from autoguidance.io.checkpoint import load
from cli_helpers import TRAIN, fails

pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(path: Path, size: int, mode: str, labels: list[int] | None) -> Path:
    path.mkdir()
    rng = np.random.default_rng(size)
    for i in range(8):
        pixels = rng.integers(0, 256, (size, size, 3) if mode == "RGB" else (size, size), dtype=np.uint8)
        Image.fromarray(pixels, mode).save(path / f"img{i}.png")
    if labels is not None:
        entries = [[f"img{i}.png", k] for i, k in enumerate(labels)]
        (path / "dataset.json").write_text(json.dumps({"labels": entries}))
    return path


def test_train_and_generate_on_a_64x64_rgb_folder(tmp_path, capsys):
    data = _folder(tmp_path / "rgb", 64, "RGB", None)
    args = ["train", "--dataset", str(data), "--preset", "xxs", "--duration", "4", "--batch", "2"]
    args += ["--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    err = fails(args, capsys)  # unlabelled, but --cond is the default
    assert "no labels" in err and "--uncond" in err and "dataset.json" in err
    main([*args, "--uncond"])
    net = tmp_path / "run" / "network-final.safetensors"
    assert load(net)[1]["net"]["img_resolution"] == 64 and load(net)[1]["net"]["channel_mult"] == [1, 2, 2, 2]
    main(["generate", "--net", str(net), "--seeds", "0-1", "--steps", "2", "--out", str(tmp_path / "gen")])
    with Image.open(tmp_path / "gen" / "seed000001.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"


def test_train_and_generate_on_a_28x28_labelled_folder(tmp_path):
    data = _folder(tmp_path / "gray", 28, "L", [0, 1, 2, 0, 1, 2, 0, 1])
    run = tmp_path / "run"
    common = ["--device", "cpu", "--no-progress"]
    main(
        [
            "train",
            "--dataset",
            str(data),
            "--preset",
            "xxs",
            "--duration",
            "4",
            "--batch",
            "2",
            "--out",
            str(run),
        ]
    )
    _, meta = load(run / "network-final.safetensors")
    assert meta["net"]["img_resolution"] == 32 and meta["image_size"] == 28 and meta["net"]["label_dim"] == 3
    main(
        [
            "generate",
            "--net",
            str(run / "network-final.safetensors"),
            "--seeds",
            "0-1",
            "--steps",
            "2",
            "--class",
            "2",
            *common,
            "--out",
            str(tmp_path / "gen"),
        ]
    )
    with Image.open(tmp_path / "gen" / "seed000000.png") as im:
        assert im.size == (28, 28) and im.mode == "L"  # padded to 32 for the network, cropped back
    assert json.loads((tmp_path / "gen" / "generate.json").read_text())["settings"]["image_size"] == 28


def test_architecture_flags_name_the_flag(tmp_path, capsys):
    args = [*TRAIN, "--duration", "16", "--out", str(tmp_path / "run")]
    main([*args, "--channels", "8", "--channel-mult", "1,1", "--blocks", "1", "--attn", "none"])
    net = load(tmp_path / "run" / "network-final.safetensors")[1]["net"]
    assert (net["model_channels"], net["channel_mult"], net["num_blocks"], net["attn_resolutions"]) == (
        8,
        [1, 1],
        1,
        [],
    )
    capsys.readouterr()
    err = fails([*args[:-1], str(tmp_path / "r2"), "--channel-mult", "1,2", "--attn", "2"], capsys)
    assert "--attn [2] are not among" in err
    err = fails([*args[:-1], str(tmp_path / "r3"), "--channel-mult", "1,x"], capsys)
    assert "--channel-mult" in err
