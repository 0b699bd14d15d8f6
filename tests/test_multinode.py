"""Several machines: `torchrun --nnodes 2 --nproc_per_node 1` with a c10d rendezvous on 127.0.0.1 (two
"nodes" on this machine) for train, generate and evaluate; each output equals one process's."""

import json

import pytest
import torch

from autoguidance.cli import main
from autoguidance.io.checkpoint import load

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TRAIN = ["-m", "autoguidance", "train", "--dataset", "digits", "--preset", "xxs", "--batch", "8"]
TRAIN += ["--duration", "32", "--snapshot-every", "16", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny conditional run, trained once by one process (the networks generate and evaluate use)."""
    out = tmp_path_factory.mktemp("one") / "run"
    main([*TRAIN[2:], "--out", str(out)])
    return out


def test_train_on_two_nodes_equals_one_process(trained, tmp_path, torchrun_nodes):
    torchrun_nodes(2, *TRAIN, "--out", str(tmp_path / "two"))
    assert load(tmp_path / "two" / "network-final.safetensors")[1]["world_size"] == 2
    for name in ("network-final", "network-ema-0.050", "network-ema-0.100"):
        one, _ = load(trained / f"{name}.safetensors")
        two, _ = load(tmp_path / "two" / f"{name}.safetensors")
        assert one.keys() == two.keys()
        for k in one:  # gradients averaged over two ranks: equal to float rounding
            assert torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-5), f"{name}: {k}"


def test_generate_on_two_nodes_equals_one_process(trained, tmp_path, torchrun_nodes):
    net = str(trained / "network-ema-0.100.safetensors")
    args = ["--net", net, "--seeds", "0-6", "--steps", "3", "--device", "cpu", "--no-progress"]
    # --batch counts images over all processes: 2 over two nodes is one process's --batch 1.
    main(["generate", *args, "--batch", "1", "--out", str(tmp_path / "one")])
    torchrun_nodes(2, "-m", "autoguidance", "generate", *args, "--batch", "2", "--out", str(tmp_path / "two"))
    for seed in range(7):
        name = f"seed{seed:06d}.png"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    one, two = (json.loads((tmp_path / d / "generate.json").read_text()) for d in ("one", "two"))
    assert two["settings"]["world_size"] == 2 and one["labels"] == two["labels"]


def test_evaluate_on_two_nodes_equals_one_process(trained, tmp_path, torchrun_nodes):
    net = str(trained / "network-ema-0.100.safetensors")
    args = ["--net", net, "--seeds", "0-9", "--steps", "2", "--ref", "digits:train", "--device", "cpu"]
    args += ["--metrics", "fd_classifier,pr_classifier,classes", "--no-progress"]
    main(["evaluate", *args, "--batch", "2", "--out", str(tmp_path / "one.json")])
    torchrun_nodes(
        2, "-m", "autoguidance", "evaluate", *args, "--batch", "4", "--out", str(tmp_path / "two.json")
    )
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert two["config"]["world_size"] == 2 and one["counts"] == two["counts"]
    assert two["metrics"]["fd_classifier"] == pytest.approx(one["metrics"]["fd_classifier"], rel=1e-6)
    assert two["metrics"]["classes"] == one["metrics"]["classes"]
    assert two["metrics"]["pr_classifier"] == one["metrics"]["pr_classifier"]
