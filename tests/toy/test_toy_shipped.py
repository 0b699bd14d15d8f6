"""The default recipe's models shipped with the package: found for exactly their settings, copied into
the output folder instead of training, and reproduced bit for bit by retraining at one thread."""

import json
import os
import subprocess
import sys

import pytest
import torch

from autoguidance.io import checkpoint
from autoguidance.toy.experiment import model_specs, obtain_model, train_config
from autoguidance.toy.mixture import ToyMixture
from autoguidance.toy.shipped import SHIPPED_DIR, shipped_model, software
from autoguidance.toy.train import heldout_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_default_model_seed_ships_and_nothing_else_matches():
    for seed in range(5):
        for name, spec in model_specs("default", seed).items():
            path = shipped_model(spec)
            assert path is not None, (seed, name)
            meta = checkpoint.read_metadata(path)
            assert meta["training"] == spec
            assert meta["software"]["torch_threads"] == meta["software"]["numba_threads"] == 1
    assert len(list(SHIPPED_DIR.glob("*.safetensors"))) == 15
    assert shipped_model(model_specs("default", 5)["main"]) is None
    assert shipped_model(model_specs("paper", 0)["main"]) is None
    assert shipped_model(model_specs("default", 0, guide_iterations=1024)["guide"]) is None


def test_shipped_model_is_copied_not_trained_and_its_loss_is_its_own(tmp_path):
    spec = model_specs("default", 0)["guide"]
    cfg = train_config(spec)
    model, seconds, meta = obtain_model("guide", cfg, tmp_path, False, False, torch.device("cpu"))
    assert seconds == 0.0
    copied = tmp_path / "models" / "guide.safetensors"
    assert copied.read_bytes() == shipped_model(spec).read_bytes()
    # The stored held-out loss is the loaded network's: the file holds the weights that were measured.
    assert heldout_loss(model, ToyMixture(cfg.classes), cfg) == pytest.approx(meta["heldout_loss"], rel=1e-6)
    # The guide is a worse model of the same task than the main model (its loss is about 3x).
    main_meta = checkpoint.read_metadata(shipped_model(model_specs("default", 0)["main"]))
    assert meta["heldout_loss"] > 2 * main_meta["heldout_loss"]


RETRAIN = """
import json, sys, torch
from pathlib import Path
from autoguidance.toy.experiment import model_specs, obtain_model, train_config
torch.set_num_threads(1)
for name in sys.argv[2:]:
    cfg = train_config(model_specs("default", 0)[name])
    obtain_model(name, cfg, Path(sys.argv[1]), True, False, torch.device("cpu"))
"""


@pytest.mark.slow
def test_retraining_at_one_thread_reproduces_the_shipped_files_bit_for_bit(tmp_path):
    """About 5 minutes: the main model (4,096 iterations at batch 4,096) in one process, the guide and
    the unconditional model in another, side by side, each at one thread as the shipped files were."""
    specs = model_specs("default", 0)
    recorded = checkpoint.read_metadata(shipped_model(specs["main"]))["software"]
    here = software()
    libraries = ("torch", "numpy", "numba")
    differ = [f"{k} {recorded[k]} (here {here[k]})" for k in libraries if recorded[k] != here[k]]
    if differ:  # bits may legitimately change with the libraries' versions
        pytest.skip("shipped files were trained with " + ", ".join(differ))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen([sys.executable, "-c", RETRAIN, str(tmp_path), *names], env=env)
        for names in (["main"], ["guide", "uncond"])
    ]
    assert [run.wait(timeout=1500) for run in runs] == [0, 0]
    for name, spec in specs.items():
        fresh, fresh_meta = checkpoint.load(tmp_path / "models" / f"{name}.safetensors", kind="toy_model")
        shipped, shipped_meta = checkpoint.load(shipped_model(spec), kind="toy_model")
        assert fresh.keys() == shipped.keys()
        for key in shipped:
            assert torch.equal(fresh[key], shipped[key]), (name, key)
        for key in ("training", "loss_curve", "final_loss", "heldout_loss"):
            assert json.dumps(fresh_meta[key]) == json.dumps(shipped_meta[key]), (name, key)
        assert fresh_meta["software"]["torch_threads"] == 1
        assert fresh_meta["train_seconds"] != shipped_meta["train_seconds"]  # trained, not copied


def test_ship_copies_a_runs_models_under_their_settings_and_refuses_a_missing_one(tmp_path, capsys):
    from autoguidance.toy.shipped import main as ship_main
    from autoguidance.toy.shipped import ship

    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    for name, spec in model_specs("default", 1).items():
        (models / f"{name}.safetensors").write_bytes(shipped_model(spec).read_bytes())
    dest = tmp_path / "weights"
    written = ship(models, dest)
    assert [p.name for p in written] == [
        "main-w64-it4096-s4.safetensors",
        "guide-w64-it512-s4.safetensors",
        "uncond-w64-it512-s6.safetensors",
    ]
    assert all(p.read_bytes() == shipped_model(model_specs("default", 1)[p.name.split("-")[0]]).read_bytes()
               for p in written)  # fmt: skip
    assert ship_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
