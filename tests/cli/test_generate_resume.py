"""`autoguidance generate` streams its PNGs to disk and resumes: killed with SIGKILL and run again, it makes
only what is missing, leaves the files already written untouched, and ends with PNGs byte-identical to an
uninterrupted run; a folder holds the images of one configuration only."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from autoguidance.cli import main
from autoguidance.io.networks import save_network
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config
from cli_helpers import fails

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    torch.manual_seed(0)
    net = build(preset_config("xs", 32, 1, 10))
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 0:
                p.fill_(1.0)  # output gains at 1: the random UNet shows through
    path = tmp_path_factory.mktemp("nets") / "net.safetensors"
    save_network(path, net)
    return path


def _args(net, out, seeds="0-23", steps="12"):
    return ["generate", "--net", str(net), "--seeds", seeds, "--steps", steps, "--batch", "4"] + [
        "--device", "cpu", "--no-progress", "--out", str(out)
    ]  # fmt: skip


def _pngs(folder):
    return {p.name: p for p in sorted(folder.glob("seed*.png"))}


@pytest.mark.slow
def test_killed_generate_resumes_to_byte_identical_pngs(net, tmp_path, capsys):
    main(_args(net, tmp_path / "whole"))
    whole = _pngs(tmp_path / "whole")
    assert len(whole) == 24
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "autoguidance", *_args(net, tmp_path / "killed")], env=env)
    deadline = time.monotonic() + 120
    while len(_pngs(tmp_path / "killed")) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {n: (p.stat().st_ino, p.stat().st_mtime_ns) for n, p in _pngs(tmp_path / "killed").items()}
    assert 4 <= len(before) < 24  # killed midway, its PNGs written so far are whole files
    assert not [p for p in (tmp_path / "killed").iterdir() if ".tmp" in p.name]
    capsys.readouterr()
    main(_args(net, tmp_path / "killed"))
    assert f"({len(before)} were there already)" in capsys.readouterr().out
    resumed = _pngs(tmp_path / "killed")
    assert resumed.keys() == whole.keys()
    assert all(resumed[n].read_bytes() == whole[n].read_bytes() for n in whole)
    for n, stamp in before.items():  # what the killed run wrote is left untouched
        assert (resumed[n].stat().st_ino, resumed[n].stat().st_mtime_ns) == stamp


def test_a_rerun_makes_only_the_missing_batches_and_more_seeds_join(net, tmp_path, capsys):
    main(_args(net, tmp_path / "a", seeds="0-7"))
    first = {n: p.read_bytes() for n, p in _pngs(tmp_path / "a").items()}
    (tmp_path / "a" / "seed000006.png").unlink()
    capsys.readouterr()
    main(_args(net, tmp_path / "a", seeds="0-11"))  # seed 6 again (its batch made anew), and 8-11
    assert "wrote 5 images" in capsys.readouterr().out
    assert {n: p.read_bytes() for n, p in _pngs(tmp_path / "a").items() if n in first} == first


def test_another_configuration_in_the_same_folder_is_refused(net, tmp_path, capsys):
    main(_args(net, tmp_path / "a", seeds="0-3"))
    err = fails(_args(net, tmp_path / "a", seeds="0-3", steps="10"), capsys)
    assert "holds the images of another configuration (sampler differ)" in err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "seed000000.png").write_bytes((tmp_path / "a" / "seed000000.png").read_bytes())
    err = fails(_args(net, tmp_path / "b", seeds="0-3"), capsys)
    assert "images of an unknown configuration" in err
    assert len(_pngs(tmp_path / "b")) == 1
