"""SIGTERM saves a state that resumes to the uninterrupted result; the last snapshot covers the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autoguidance.cli import main
from autoguidance.io.checkpoint import load
from cli_helpers import TRAIN, fails

pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.mark.slow
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
    assert "--snapshot-every" in fails(["phema", "--run", str(empty), "--sigma-rel", "0.1"], capsys)
