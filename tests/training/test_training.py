"""Image-model training: the EDM2 loss, the loop (learning, exact resume, 1 vs 2 processes), post-hoc EMA
export and the train / phema / info commands. CPU only, the digits dataset (8x8) and the xxs preset."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

from autoguidance.cli import main
from autoguidance.errors import UserInputError
from autoguidance.io.checkpoint import load
from autoguidance.io.networks import load_network
from autoguidance.training.loop import STATE_FILE, TrainConfig, learning_rate, train
from autoguidance.training.loss import loss_weight, per_element_loss, sigma_from_normal
from autoguidance.training.noise import training_noise

TINY = dict(dataset="digits", preset="xxs", warmup=10, t_ref=1000)


pytestmark = pytest.mark.usefixtures("one_thread")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load(path)[0]


def _assert_files_equal(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a.name}: {k} differs"


# ---------------------------------------------------------------------------------------------------------
# Pure pieces


def test_loss_formulas():
    sd = 0.5
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    assert torch.allclose(loss_weight(sigma, sd) * c_out**2, torch.ones(4, dtype=torch.float64))
    expected = torch.tensor([-0.8, 0.8]).exp()  # ln sigma = P_mean + P_std * normal
    assert torch.allclose(sigma_from_normal(torch.tensor([0.0, 1.0]), -0.8, 1.6), expected)
    d, y = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    u = torch.randn(4, 1, 1, 1, dtype=torch.float64)
    lam = ((sigma**2 + sd**2) / (sigma * sd) ** 2).reshape(4, 1, 1, 1)
    assert torch.allclose(per_element_loss(d, y, u, sigma, sd), lam / u.exp() * (d - y) ** 2 + u)


def test_noise_depends_on_global_position_only():
    whole = training_noise(7, 3, range(8), (1, 4, 4))
    halves = [training_noise(7, 3, range(0, 4), (1, 4, 4)), training_noise(7, 3, range(4, 8), (1, 4, 4))]
    for i in range(2):
        assert torch.equal(whole[i], torch.cat([h[i] for h in halves]))
    assert not torch.equal(whole[0], training_noise(7, 4, range(8), (1, 4, 4))[0])  # new step, new noise
    assert not torch.equal(whole[0], training_noise(8, 3, range(8), (1, 4, 4))[0])  # new seed, new noise


def test_learning_rate_schedule():
    c = TrainConfig(lr_ref=0.01, t_ref=100, warmup=10)
    assert learning_rate(c, 0) == pytest.approx(0.001)  # warm-up: t / warmup
    assert learning_rate(c, 49) == pytest.approx(0.01)  # flat until t_ref
    assert learning_rate(c, 399) == pytest.approx(0.005)  # then lr_ref / sqrt(t / t_ref)


@pytest.mark.parametrize(
    "change",
    [
        dict(duration=0),
        dict(batch_size=-1),
        dict(preset="huge"),
        dict(ema_sigma_rels=(0.5,)),
        dict(dropout=1.0),
        dict(p_std=0.0),
    ],
)
def test_bad_config_raises(change):
    with pytest.raises(UserInputError):
        TrainConfig(**change)


def test_config_round_trips_through_json():
    c = TrainConfig(**TINY, ema_sigma_rels=(0.05, 0.1, 0.2))
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert TrainConfig(duration=100, batch_size=32).total_steps == 4  # ceil


# ---------------------------------------------------------------------------------------------------------
# The loop


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """120 iterations of batch 16 (about 10 s): snapshots every 20 iterations, per-iteration log."""
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        **TINY, batch_size=16, duration=16 * 120, snapshot_every=16 * 20, checkpoint_every=16 * 60
    )
    result = train(config, run, progress=False, log_every=1)
    assert result.finished and result.steps == 120
    return run, config


def test_loss_falls(trained_run):
    run, _ = trained_run
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 121))
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    assert all(r["images_per_sec"] > 0 and math.isfinite(r["lr"]) for r in records)


def test_outputs_load_as_networks(trained_run):
    run, config = trained_run
    for name in ("network-final", "network-ema-0.050", "network-ema-0.100"):
        net, meta = load_network(run / f"{name}.safetensors")
        assert meta["step"] == 120 and meta["training_images"] == 1920
        assert meta["train_config"] == config.to_dict()
        x = torch.randn(2, 1, 8, 8)
        assert net(x, torch.tensor([0.5, 2.0]), torch.tensor([1, 2])).shape == x.shape


def test_phema_reconstructs_tracked_ema(trained_run, tmp_path):
    run, _ = trained_run
    main(["phema", "--run", str(run), "--sigma-rel", "0.05,0.10", "--out", str(tmp_path)])
    for tag in ("0.050", "0.100"):
        rec, tracked = (
            _tensors(tmp_path / f"network-phema-{tag}.safetensors"),
            _tensors(run / f"network-ema-{tag}.safetensors"),
        )
        for name, t in tracked.items():
            assert torch.allclose(rec[name], t, atol=2e-3, rtol=0), name
    # At an earlier snapshot time only the snapshots so far count: there it matches that snapshot.
    main(
        ["phema", "--run", str(run), "--sigma-rel", "0.10", "--at", "960", "--out", str(tmp_path / "at60")]
    )  # 60 x 16
    rec = _tensors(tmp_path / "at60" / "network-phema-0.100.safetensors")
    snap = _tensors(run / "snapshots" / "phema-0000000060-0.1000.safetensors")
    assert max(float((rec[k] - snap[k]).abs().max()) for k in snap) < 2e-3
    assert load_network(tmp_path / "at60" / "network-phema-0.100.safetensors")[1]["step"] == 60


def test_resume_is_bit_identical(tmp_path):
    config = TrainConfig(**TINY, batch_size=8, duration=8 * 6, snapshot_every=8 * 2, checkpoint_every=10**6)
    rng_before = torch.get_rng_state()
    train(config, tmp_path / "a", progress=False, log_every=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone

    assert not train(config, tmp_path / "b", progress=False, stop_after=3, log_every=1).finished
    assert not (tmp_path / "b" / "network-final.safetensors").exists()
    assert train(config, tmp_path / "b", progress=False, log_every=1).steps == 6
    names = ["training-state", "network-final", "network-ema-0.050", "network-ema-0.100"]
    for name in names:
        _assert_files_equal(tmp_path / "a" / f"{name}.safetensors", tmp_path / "b" / f"{name}.safetensors")
    for snap in (tmp_path / "a" / "snapshots").iterdir():
        _assert_files_equal(snap, tmp_path / "b" / "snapshots" / snap.name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]

    # A finished run continues with a longer duration exactly like a run that was longer from the start.
    longer = TrainConfig(**{**config.to_dict(), "duration": 8 * 8})
    train(longer, tmp_path / "b", progress=False)
    train(longer, tmp_path / "c", progress=False)
    for name in names:
        _assert_files_equal(tmp_path / "b" / f"{name}.safetensors", tmp_path / "c" / f"{name}.safetensors")


def test_other_config_in_run_dir_is_rejected(tmp_path):
    config = TrainConfig(**TINY, batch_size=8, duration=16)
    train(config, tmp_path, progress=False)
    with pytest.raises(UserInputError, match="lr_ref"):
        train(TrainConfig(**{**config.to_dict(), "lr_ref": 0.02}), tmp_path, progress=False)
    with pytest.raises(UserInputError, match="longer duration"):
        train(TrainConfig(**{**config.to_dict(), "duration": 8}), tmp_path, progress=False)
    (tmp_path / STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="corrupt"):
        train(config, tmp_path, progress=False)


_WORKER = """
import sys, torch
from autoguidance.training.loop import TrainConfig, train
torch.set_num_threads(1)
train(TrainConfig(**{config}), sys.argv[1], progress=False, device="cpu", log_every=1)
"""


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, torchrun):
    config = TrainConfig(**TINY, batch_size=8, duration=8 * 4, snapshot_every=8 * 2)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER.format(config=repr(config.to_dict()))))
    torchrun(2, str(script), str(tmp_path / "two"))
    train(config, tmp_path / "one", progress=False, log_every=1)

    meta = load(tmp_path / "two" / "network-final.safetensors")[1]
    assert meta["world_size"] == 2
    for name in ("network-final", "network-ema-0.050", "network-ema-0.100"):
        one, two = (_tensors(tmp_path / d / f"{name}.safetensors") for d in ("one", "two"))
        for k in one:
            assert torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-5), f"{name}: {k}"
    logs = [
        [json.loads(line)["loss"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    ]
    assert logs[0] == pytest.approx(logs[1], rel=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Commands


def test_train_and_info_commands(tmp_path, capsys):
    out = tmp_path / "run"
    main(
        [
            "train",
            "--dataset",
            "digits",
            "--preset",
            "xxs",
            "--uncond",
            "--duration",
            "16",
            "--batch",
            "8",
            "--out",
            str(out),
            "--snapshot-every",
            "8",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert (out / "network-ema-0.050.safetensors").exists()
    capsys.readouterr()
    for ckpt in (
        out / "network-final.safetensors",
        out / STATE_FILE,
        out / "snapshots" / "phema-0000000002-0.0500.safetensors",
    ):
        main(["info", str(ckpt)])
        text = capsys.readouterr().out
        assert "parameters: " in text and "flops_per_evaluation: " in text and '"preset": "xxs"' in text
        assert "label_dim: 0" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "digits", "--preset", "huge", "--duration", "8", "--out", "{tmp}"], "preset"),
        (["train", "--dataset", "nosuch", "--preset", "xxs", "--duration", "8", "--out", "{tmp}"], "nosuch"),
        (["train", "--dataset", "digits", "--duration", "0", "--out", "{tmp}"], "duration"),
        (["train", "--dataset", "digits", "--duration", "-5", "--out", "{tmp}"], "duration"),
        (["train", "--dataset", "digits", "--duration", "8", "--batch", "0", "--out", "{tmp}"], "--batch"),
        (
            ["train", "--dataset", "digits", "--duration", "8", "--ema", "0.05,x", "--out", "{tmp}"],
            "sigma_rel",
        ),
        (["info", "{tmp}/corrupt.safetensors"], "corrupt"),
        (["info", "{tmp}/missing.safetensors"], "not found"),
        (["phema", "--run", "{tmp}", "--sigma-rel", "0.05"], "snapshots"),
        (["phema", "--run", "{tmp}", "--sigma-rel", "0.9"], "sigma_rel"),
    ],
)
def test_command_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoguidance: error:") and message in err, err
