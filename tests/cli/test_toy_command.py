"""`autoguidance toy` end to end (quick), redrawing from stored results, and bad input -> exit 2."""

import json
import subprocess
import sys

import pytest

from autoguidance.cli import main
from autoguidance.toy.checkpoint import load_toy_model, save_toy_model


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    proc = subprocess.run(
        [sys.executable, "-m", "autoguidance", "toy", "--quick", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.mark.slow  # the quick toy run (about 15 s) they share
def test_quick_run_writes_everything(quick_run):
    out, proc = quick_run
    for name in ("figure1.png", "figure2.png", "figure9.png", "metrics.json", "results.npz"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"ground_truth", "unguided", "cfg", "truncation", "autoguidance"}
    for m in metrics["methods"].values():
        assert set(m) == {
            "num_samples",
            "outlier_fraction",
            "branch_tv",
            "depth_tv",
            "within_depth_tv",
            "outer_depth_ratio",
            "recall",
            "recall_outer",
            "mean_logp",
            "depth_mass",
        }
        assert m["num_samples"] == 2048
        assert m["branch_tv"] <= m["depth_tv"] + m["within_depth_tv"] + 1e-12
    assert metrics["settings"]["quick"] is True and "total" in metrics["timings"]
    # A quick run says, in its output and its metrics, that its numbers mean nothing.
    assert "NOT meaningful" in metrics["note"] and "NOT meaningful" in proc.stdout
    assert set(metrics["models"]) == {"main", "guide", "uncond"}
    assert all(m["heldout_loss"] > 0 for m in metrics["models"].values())
    assert metrics["settings"]["recipe"] == "default" and metrics["settings"]["device"] == "cpu"
    # Even the quick run tells part of the story: truncation removes outliers, autoguidance keeps branches.
    methods = metrics["methods"]
    assert methods["truncation"]["outlier_fraction"] < methods["unguided"]["outlier_fraction"]
    # The printed table's autoguidance row carries that method's measured numbers.
    (row,) = [line.split() for line in proc.stdout.splitlines() if line.startswith("autoguidance ")]
    ag = methods["autoguidance"]
    assert row[1:4] == [f"{ag['outlier_fraction']:.4f}", f"{ag['branch_tv']:.3f}", f"{ag['depth_tv']:.3f}"]


@pytest.mark.slow  # the quick toy run (about 15 s) they share
def test_sweep_reuses_models_and_draws_front(quick_run, capsys):
    out, _ = quick_run
    before = (out / "models" / "main.safetensors").stat().st_mtime_ns
    args = [
        "toy-sweep",
        "--quick",
        "--no-progress",
        "--samples",
        "256",
        "--weights",
        "1,2.5",
        "--truncation-scales",
        "1.05,1",
        "--out",
        str(out),
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert (out / "models" / "main.safetensors").stat().st_mtime_ns == before
    sweep = json.loads((out / "sweep.json").read_text())
    assert set(sweep["curves"]) == {"autoguidance", "cfg", "truncation"}
    for method, curve in sweep["curves"].items():
        assert [p["w"] for p in curve] == ([1.0, 1.05] if method == "truncation" else [1.0, 2.5])
        assert curve[0] == sweep["unguided"]  # w = 1 is the unguided model for every method
    (row,) = sweep["at_equal_outliers"]  # one per autoguidance strength above 1
    assert row["autoguidance"]["w"] == 2.5
    assert row["outliers"] == sweep["curves"]["autoguidance"][1]["outlier_fraction"]
    assert "at autoguidance's outlier levels" in stdout
    assert (out / "front.png").stat().st_size > 0 and "NOT meaningful" in stdout


@pytest.mark.slow  # the quick toy run (about 15 s) they share
def test_figures_redraw_without_resampling(quick_run, capsys):
    out, _ = quick_run
    (out / "figure1.png").unlink()
    code, stdout, _ = run_cli(["toy-plot", "--out", str(out)], capsys)
    assert code == 0 and (out / "figure1.png").exists()


@pytest.mark.slow  # the quick toy run (about 15 s) they share
def test_rerun_reuses_models(quick_run, tmp_path, capsys):
    out, _ = quick_run
    before = (out / "models" / "main.safetensors").stat().st_mtime_ns
    code, _, err = run_cli(["toy", "--quick", "--no-progress", "--samples", "64", "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "models" / "main.safetensors").stat().st_mtime_ns == before
    assert json.loads((out / "metrics.json").read_text())["timings"]["train_main"] == 0.0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--guidance", "-1"], "--guidance must be >= 0"),
        (["--cfg-guidance", "inf"], "--cfg-guidance must be a finite number"),
        (["--truncation", "abc"], "--truncation must be a number"),
        (["--samples", "0"], "--samples"),
        (["--seed", "-3"], "--seed"),
        (["--bogus"], "No such option"),
        (["--recipe", "fancy"], "--recipe"),
        (["--model-seed", "-1"], "--model-seed"),
        (["--guide-width", "0"], "--guide-width"),
        (["--guide-iterations", "0"], "--guide-iterations"),
        (["--guide-ema", "0.5"], "--guide-ema"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "o"
    code, _, err = run_cli(["toy", "--quick", "--out", str(out), *args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--weights", "--truncation-scales"])
@pytest.mark.parametrize("weights", ["0.5,2", "1,x", "1,nan"])
def test_sweep_bad_weights_is_exit_2(tmp_path, capsys, weights, flag):
    out = tmp_path / "o"
    code, _, err = run_cli(["toy-sweep", "--quick", flag, weights, "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and flag in err
    assert not out.exists()


def test_corrupt_saved_model_is_exit_2(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "main.safetensors").write_bytes(b"not a safetensors file at all")
    code, _, err = run_cli(["toy", "--quick", "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "corrupt checkpoint" in err
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "results.npz").exists()


@pytest.mark.slow  # the quick toy run (about 15 s) they share
def test_mismatched_saved_model_is_exit_2(quick_run, tmp_path, capsys):
    out, _ = quick_run
    model, meta = load_toy_model(out / "models" / "main.safetensors")
    (tmp_path / "models").mkdir()
    meta["training"] = {**meta["training"], "iterations": 7}
    save_toy_model(tmp_path / "models" / "main.safetensors", model, meta)
    code, _, err = run_cli(["toy", "--quick", "--out", str(tmp_path)], capsys)
    assert code == 2 and "other settings" in err and err.count("\n") == 1
    assert not (tmp_path / "metrics.json").exists()
