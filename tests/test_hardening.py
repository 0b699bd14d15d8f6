"""A new user's hands on the whole surface: bad output paths for every command, diverging runs, malformed
configs, interrupted and failed writes, file permissions, your own image folders at 64x64 RGB and 28x28,
SIGTERM then resume, `info` without a checkpoint, and the checks that guidance builders make."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoguidance import autoguidance, classifier_free
from autoguidance.cli import main
from autoguidance.errors import OutputPathError, UserInputError
from autoguidance.io import atomic
from autoguidance.io.checkpoint import load
from autoguidance.nets.flops import flops_per_evaluation
from autoguidance.nets.precond import NetConfig, build
from autoguidance.nets.presets import preset_config
from autoguidance.toy.checkpoint import save_toy_model
from autoguidance.toy.model import ToyModel, ToyModelConfig
from autoguidance.training.ema import PowerFunctionEMA

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["train", "--dataset", "digits", "--preset", "xxs", "--uncond", "--batch", "8", "--device", "cpu"]
TRAIN += ["--no-progress"]


def _fails(argv: list[str], capsys, code: int = 2) -> str:
    """Run the CLI, expect exit `code` with exactly one line on stderr and no traceback; return it."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoguidance: ") and "Traceback" not in err, err
    return err


def _no_temp_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    assert not left, left


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run (2 iterations of batch 8 on digits): networks and snapshots to read."""
    out = tmp_path_factory.mktemp("run") / "run"
    main([*TRAIN, "--duration", "16", "--out", str(out)])
    return out


# ---------------------------------------------------------------------------------------------------------
# Output paths, for every command that writes


def _commands(run: Path, out: str) -> dict[str, list[str]]:
    net = str(run / "network-final.safetensors")
    return {
        "train": [*TRAIN, "--duration", "16", "--out", out],
        "generate": [
            "generate",
            "--net",
            net,
            "--seeds",
            "0-1",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            out,
        ],
        "phema": ["phema", "--run", str(run), "--sigma-rel", "0.07", "--out", out],
    }


@pytest.mark.parametrize("command", ["train", "generate", "phema"])
def test_out_is_a_file(run, tmp_path, capsys, command):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    err = _fails(_commands(run, str(blocker))[command], capsys)
    assert "--out" in err and "is a file" in err
    assert blocker.read_text() == "a file"
    # Below a file: the folder cannot be created at all.
    err = _fails(_commands(run, str(blocker / "sub"))[command], capsys)
    assert "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def _permissions_bind() -> bool:
    """False for a user whom file modes do not stop (root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o500)
        try:
            Path(d, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o700)
        return False


@pytest.mark.skipif(not _permissions_bind(), reason="this user (root) writes into read-only folders")
@pytest.mark.parametrize("command", ["train", "generate", "phema"])
def test_out_is_unwritable(run, tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for out in (locked, locked / "sub"):
            err = _fails(_commands(run, str(out))[command], capsys)
            assert "permission" in err and "--out" in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_check_dir_refuses_what_it_cannot_write(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputPathError, match="is a file"):
        atomic.check_dir(tmp_path / "f")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        atomic.check_dir(tmp_path / "f" / "a" / "b")
    assert atomic.check_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing


# ---------------------------------------------------------------------------------------------------------
# Failing runs and failing writes


def test_diverging_loss_exits_1_in_one_line(tmp_path, capsys, monkeypatch):
    from autoguidance.training import loop

    real = loop.denoising_loss
    monkeypatch.setattr(loop, "denoising_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    out = tmp_path / "run"
    err = _fails([*TRAIN, "--duration", "32", "--log-every", "8", "--out", str(out)], capsys, code=1)
    assert "diverged" in err and "iteration 1" in err
    assert (
        not (out / "network-final.safetensors").exists() and not (out / "training-state.safetensors").exists()
    )


def test_malformed_training_config(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "training-config.json").write_text("{not json")
    err = _fails([*TRAIN, "--duration", "16", "--out", str(out)], capsys)
    assert "training-config.json" in err and "not valid JSON" in err
    (out / "training-config.json").write_text(json.dumps({"preset": "xxs", "batch": 8}))
    err = _fails([*TRAIN, "--duration", "16", "--out", str(out)], capsys)
    assert "unknown training config keys ['batch']" in err
    assert sorted(p.name for p in out.iterdir()) == ["training-config.json"]


def test_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"old": 1})

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(target, half_then_crash)
    assert json.loads(target.read_text()) == {"old": 1}
    _no_temp_files(tmp_path)


def test_full_disk_is_one_line(run, tmp_path, capsys, monkeypatch):
    from autoguidance.io import checkpoint

    def full(*args, **kwargs):
        raise RuntimeError(
            'Error while serializing: I/O error: No space left on device (os error 28) at path "x"'
        )

    monkeypatch.setattr(checkpoint, "save_file", full)
    out = tmp_path / "run"
    err = _fails([*TRAIN, "--duration", "16", "--out", str(out)], capsys)
    assert "no space left on the device" in err
    _no_temp_files(out)
    assert not list(out.glob("*.safetensors"))
    # PNGs (Pillow) too.
    monkeypatch.setattr(Image.Image, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    gen = tmp_path / "gen"
    err = _fails(_commands(run, str(gen))["generate"], capsys)
    assert "no space left on the device" in err and "seed000000.png" in err
    _no_temp_files(gen)


def test_files_keep_umask_permissions(run, tmp_path):
    before = os.umask(0o022)
    try:
        out = tmp_path / "run"
        main([*TRAIN, "--duration", "16", "--out", str(out)])
        main(["phema", "--run", str(out), "--sigma-rel", "0.07"])
        main(_commands(run, str(tmp_path / "gen"))["generate"])
        main([*_commands(run, str(tmp_path / "grid"))["generate"], "--grid"])
    finally:
        os.umask(before)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.suffix == ".safetensors" for p in files)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(mode == 0o644 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


# ---------------------------------------------------------------------------------------------------------
# Your own images: a 64x64 RGB folder (unlabelled) and a 28x28 grayscale folder with dataset.json


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
    err = _fails(args, capsys)  # unlabelled, but --cond is the default
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
    err = _fails([*args[:-1], str(tmp_path / "r2"), "--channel-mult", "1,2", "--attn", "2"], capsys)
    assert "--attn [2] are not among" in err
    err = _fails([*args[:-1], str(tmp_path / "r3"), "--channel-mult", "1,x"], capsys)
    assert "--channel-mult" in err


# ---------------------------------------------------------------------------------------------------------
# Interrupts


def _train_cmd(out: Path) -> list[str]:
    args = [
        "train",
        "--dataset",
        "digits",
        "--preset",
        "xxs",
        "--uncond",
        "--batch",
        "8",
        "--duration",
        "2400",
    ]
    args += ["--log-every", "8", "--checkpoint-every", "800", "--snapshot-every", "800", "--device", "cpu"]
    return [sys.executable, "-m", "autoguidance", *args, "--no-progress", "--out", str(out)]


def test_sigterm_saves_a_state_that_resumes_to_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_train_cmd(cut), env=env, stderr=subprocess.PIPE, text=True)
    log = cut / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 30):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    step = load(cut / "training-state.safetensors")[1]["step"]
    assert 30 <= step < 300 and not (cut / "network-final.safetensors").exists()
    assert json.loads(log.read_text().splitlines()[-1])["step"] == step
    # Resume with the same command; compare with a run that was never interrupted.
    subprocess.run(_train_cmd(cut), env=env, check=True, capture_output=True)
    whole = tmp_path / "whole"
    subprocess.run(_train_cmd(whole), env=env, check=True, capture_output=True)
    for name in ("network-final", "network-ema-0.050", "network-ema-0.100"):
        a, b = (load(d / f"{name}.safetensors")[0] for d in (cut, whole))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 301))


def test_final_snapshot_covers_the_end_of_training(tmp_path, capsys):
    out = tmp_path / "run"
    main([*TRAIN, "--duration", "40", "--snapshot-every", "32", "--out", str(out)])  # 5 iterations
    names = sorted(p.name for p in (out / "snapshots").iterdir())
    assert names == [f"phema-{s:010d}-{r}.safetensors" for s in (4, 5) for r in ("0.0500", "0.1000")]
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert "--snapshot-every" in _fails(["phema", "--run", str(empty), "--sigma-rel", "0.1"], capsys)


# ---------------------------------------------------------------------------------------------------------
# info without a checkpoint, and for toy models


def test_info_preset_without_checkpoint(capsys):
    main(["info", "--preset", "s", "--resolution", "64"])
    text = capsys.readouterr().out
    assert "preset: s at 64x64x3" in text and "channel_mult: [1, 2, 2, 2]" in text
    params = build(preset_config("s", 64, 3, 0))
    assert f"parameters: {sum(p.numel() for p in params.parameters()):,}" in text
    assert "flops_per_evaluation: " in text
    assert "pad the images to 32" in _fails(["info", "--preset", "s", "--resolution", "28"], capsys)
    assert "not both" in _fails(["info"], capsys)


def test_info_describes_toy_models(tmp_path, capsys):
    model = ToyModel(ToyModelConfig(width=8, depth=2))
    save_toy_model(tmp_path / "toy.safetensors", model, {"iterations": 3})
    main(["info", str(tmp_path / "toy.safetensors")])
    text = capsys.readouterr().out
    # 4 x 8 + 2 x 8 x 8 weights + the gain; forward FLOPs 2 x (4 x 8 + 2 x 64) = 320.
    assert "kind: toy_model" in text and "parameters: 161" in text and "flops_log_density: 320" in text
    assert "iterations: 3" in text


# ---------------------------------------------------------------------------------------------------------
# Counts and checks that can fail


def test_flops_match_a_hand_count():
    """One level at 8x8, width 4, one block, no attention resolutions (the decoder's first block always
    attends). MACs per module, counted by hand from the architecture:
      emb_noise 4x4 = 16; input conv 3x3 2->4: 256 outputs x 18 = 4608;
      enc block (4->4): two 3x3 convs 256 x 36 each + emb linear 16 = 18448;
      dec in0: 18448 + qkv 1x1 4->12: 768 x 4 = 3072 + proj 256 x 4 = 1024 + attention 2 x 4 x 64^2 = 32768;
      dec in1: 18448; two dec blocks 8->4: 3x3 256 x 72 + 3x3 256 x 36 + skip 1x1 256 x 8 + 16 = 29712 each;
      output conv 3x3 4->1: 64 x 36 = 2304. Sum 158560 MACs = 317120 FLOPs."""
    cfg = NetConfig(
        img_resolution=8,
        img_channels=1,
        label_dim=0,
        model_channels=4,
        channel_mult=(1,),
        num_blocks=1,
        attn_resolutions=(),
    )
    assert flops_per_evaluation(build(cfg)) == 317_120


def test_ema_follows_each_parameter_by_name():
    """Parameters with distinct values and shapes: an EMA that mixed up names would fail here."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    ema = PowerFunctionEMA(net, (0.1,))
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.fill_(float(i + 1))
    ema.update(net, cur_t=1, delta_t=1)  # the first update copies the parameters
    for i, (name, _) in enumerate(net.named_parameters()):
        assert torch.equal(ema.ema_tensors(0)[name], torch.full_like(ema.ema_tensors(0)[name], i + 1.0)), name
    state = ema.state_dict()
    state["ema0.0.bogus"] = state.pop("ema0.0.weight")
    with pytest.raises(UserInputError, match="ema0.0.weight"):
        PowerFunctionEMA(net, (0.1,)).load_state_dict(state)
    renamed = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    renamed.add_module("extra", torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="names differ"):
        ema.update(renamed, cur_t=2, delta_t=1)


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


def test_sampler_options_are_used_and_recorded(run, tmp_path, capsys):
    base = _commands(run, str(tmp_path / "a"))["generate"]
    main([*base, "--solver", "euler", "--churn", "2", "--s-tmax", "10", "--sigma-max", "20", "--rho", "5"])
    sampler = json.loads((tmp_path / "a" / "generate.json").read_text())["settings"]["sampler"]
    assert sampler == {
        "steps": 2,
        "sigma_min": 0.002,
        "sigma_max": 20.0,
        "rho": 5.0,
        "solver": "euler",
        "churn": 2.0,
        "s_tmin": 0.0,
        "s_tmax": 10.0,
        "s_noise": 1.0,
    }
    main(_commands(run, str(tmp_path / "b"))["generate"])
    a, b = (np.asarray(Image.open(tmp_path / d / "seed000000.png")) for d in ("a", "b"))
    assert not np.array_equal(a, b)  # the settings reach the sampler
    err = _fails([*_commands(run, str(tmp_path / "c"))["generate"], "--sigma-min", "0"], capsys)
    assert "--sigma-min" in err
    assert not (tmp_path / "c").exists()
