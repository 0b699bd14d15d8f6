"""Runs that fail on good input exit 1 in one line; bad config and full disks exit 2; files keep the umask."""

from __future__ import annotations

import json
import os
import stat

import pytest
from PIL import Image

from autoguidance.cli import main
from cli_helpers import TRAIN, commands, fails, no_temp_files

pytestmark = pytest.mark.usefixtures("one_thread")


def test_diverging_loss_exits_1_in_one_line(tmp_path, capsys, monkeypatch):
    from autoguidance.training import loop

    real = loop.denoising_loss
    monkeypatch.setattr(loop, "denoising_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    out = tmp_path / "run"
    err = fails([*TRAIN, "--duration", "32", "--log-every", "8", "--out", str(out)], capsys, code=1)
    assert "diverged" in err and "iteration 1" in err
    assert (
        not (out / "network-final.safetensors").exists() and not (out / "training-state.safetensors").exists()
    )


def test_malformed_training_config(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "training-config.json").write_text("{not json")
    err = fails([*TRAIN, "--duration", "16", "--out", str(out)], capsys)
    assert "training-config.json" in err and "not valid JSON" in err
    (out / "training-config.json").write_text(json.dumps({"preset": "xxs", "batch": 8}))
    err = fails([*TRAIN, "--duration", "16", "--out", str(out)], capsys)
    assert "unknown training config keys ['batch']" in err
    assert sorted(p.name for p in out.iterdir()) == ["training-config.json"]


def test_full_disk_is_one_line(run, tmp_path, capsys, monkeypatch):
    from autoguidance.io import checkpoint

    def full(*args, **kwargs):
        raise RuntimeError(
            'Error while serializing: I/O error: No space left on device (os error 28) at path "x"'
        )

    monkeypatch.setattr(checkpoint, "save_file", full)
    out = tmp_path / "run"
    err = fails([*TRAIN, "--duration", "16", "--out", str(out)], capsys)
    assert "no space left on the device" in err
    no_temp_files(out)
    assert not list(out.glob("*.safetensors"))
    # PNGs (Pillow) too.
    monkeypatch.setattr(Image.Image, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    gen = tmp_path / "gen"
    err = fails(commands(run, str(gen))["generate"], capsys)
    assert "no space left on the device" in err and "seed000000.png" in err
    no_temp_files(gen)


def test_files_keep_umask_permissions(run, tmp_path):
    before = os.umask(0o022)
    try:
        out = tmp_path / "run"
        main([*TRAIN, "--duration", "16", "--out", str(out)])
        main(["phema", "--run", str(out), "--sigma-rel", "0.07"])
        main(commands(run, str(tmp_path / "gen"))["generate"])
        main([*commands(run, str(tmp_path / "grid"))["generate"], "--grid"])
    finally:
        os.umask(before)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.suffix == ".safetensors" for p in files)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(mode == 0o644 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
