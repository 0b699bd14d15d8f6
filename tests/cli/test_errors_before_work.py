"""Errors before work, everywhere: every command that writes, given an output that cannot be written (a
file where a folder goes, a path under /proc, a folder nobody may write into), answers within a few
seconds with one line and exit status 2, before it trains, samples, loads or downloads anything, and
leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import TRAIN, fails

pytestmark = pytest.mark.usefixtures("one_thread")
SECONDS = 10  # "a few seconds": the checks come first (loading torch and the CLI is most of it)


@pytest.fixture
def locked(tmp_path):
    """A folder this user cannot write into: immutable for root (file modes do not stop root), read and
    execute only for anyone else."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root, and this file system has no immutable folders")
    else:
        folder.chmod(0o500)
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o700)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, run):
    """Valid inputs for every command, so that the output is the only thing wrong."""
    folder = tmp_path_factory.mktemp("inputs")
    images = folder / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(images / f"{i}.png")
    sweep = folder / "sweep.json"
    net = str(run / "network-final.safetensors")
    sweep.write_text(
        json.dumps(
            {
                "name": "s",
                "fixed": {"kind": "none", "main_run": net, "samples": 2},
                "grid": {"main_ema": [0.1]},
            }
        )
    )
    from edm2_writer import _config, _kwargs, _random_net, edm2_pickle_bytes

    (folder / "net.pkl").write_bytes(edm2_pickle_bytes(_random_net(_config()), _kwargs(_config())))
    (folder / "pipeline").mkdir()
    return {"run": run, "net": net, "images": images, "sweep": sweep, "pkl": folder / "net.pkl",
            "pipeline": folder / "pipeline"}  # fmt: skip


# command -> (arguments before the output, how the output is given, "folder" or "file")
COMMANDS = {
    "train": (lambda i: [*TRAIN, "--duration", "16"], "--out", "folder"),
    "generate": (
        lambda i: ["generate", "--net", i["net"], "--seeds", "0-1", "--steps", "2"],
        "--out",
        "folder",
    ),
    "evaluate": (
        lambda i: ["evaluate", "--images", str(i["images"]), "--metrics", "classes"],
        "--out",
        "file",
    ),
    "phema": (lambda i: ["phema", "--run", str(i["run"]), "--sigma-rel", "0.07"], "--out", "folder"),
    "toy": (lambda i: ["toy", "--quick", "--no-progress"], "--out", "folder"),
    "toy-sweep": (lambda i: ["toy-sweep", "--quick", "--no-progress"], "--out", "folder"),
    "toy-plot": (lambda i: ["toy-plot"], "--out", "folder"),
    "experiment": (lambda i: ["experiment", "table1", "--no-progress"], "--out", "folder"),
    "sweep": (lambda i: ["sweep", str(i["sweep"])], "--store", "file"),
    "tune": (
        lambda i: ["tune", "--main-run", str(i["run"]), "--guide-run", str(i["run"])],
        "--store",
        "file",
    ),
    "convert": (lambda i: ["convert", str(i["pkl"])], "", "file"),
    "generate-diffusers": (
        lambda i: ["generate-diffusers", "--model", str(i["pipeline"])],
        "--out",
        "folder",
    ),
    "generate-text": (
        lambda i: ["generate-text", "--model", str(i["pipeline"]), "--prompt", "a cat"],
        "--out",
        "folder",
    ),
}


def _output(kind: str, where: str, tmp_path: Path, locked: Path) -> Path:
    name = "out.safetensors" if kind == "file" else "out"
    if where == "a file as a folder":
        (tmp_path / "taken").write_text("a file")
        return tmp_path / "taken" if kind == "folder" else tmp_path / "taken" / name
    if where == "under /proc":
        return Path("/proc/autoguidance-nope") / name
    return locked / name


@pytest.mark.parametrize("where", ["a file as a folder", "under /proc", "an unwritable folder"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_output_is_one_line_before_any_work(command, where, inputs, tmp_path, request, capsys):
    locked = request.getfixturevalue("locked") if where == "an unwritable folder" else tmp_path
    before, flag, kind = COMMANDS[command]
    out = _output(kind, where, tmp_path, locked)
    args = [*before(inputs), *([flag, str(out)] if flag else [str(out)])]
    t0 = time.perf_counter()
    err = fails(args, capsys)
    assert time.perf_counter() - t0 < SECONDS
    assert str(out) in err or str(out.parent) in err  # the message is about the output
    if out == tmp_path / "taken":
        assert out.read_text() == "a file"  # the file given as a folder is left as it was
    else:
        assert not out.exists()
    if where == "an unwritable folder":
        assert list(locked.iterdir()) == []
