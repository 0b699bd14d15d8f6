"""The toy MLP: its untrained form is the Gaussian prior, its score is the gradient of its log density,
training against the exact score lowers the loss, and it round-trips through a checkpoint."""

import pytest
import torch

from autoguidance import UserInputError
from autoguidance.toy.checkpoint import load_toy_model, save_toy_model
from autoguidance.toy.model import ToyModel, ToyModelConfig
from autoguidance.toy.train import ToyTrainConfig, learning_rate, train_toy_model


def test_untrained_model_is_gaussian_prior():
    net = ToyModel(ToyModelConfig(width=16))
    x = torch.randn(8, 2)
    sigma = torch.linspace(0.01, 4, 8)
    # gain = 0: log p = -|x|^2 / (2 (sd^2 + sigma^2)), i.e. D = x sd^2 / (sd^2 + sigma^2).
    expected = x * 0.25 / (0.25 + sigma[:, None] ** 2)
    torch.testing.assert_close(net(x, sigma), expected)


def test_score_is_gradient_of_log_density():
    torch.manual_seed(0)
    net = ToyModel(ToyModelConfig(width=16)).double().eval()  # train mode would renormalise weights per call
    with torch.no_grad():
        net.gain.fill_(0.7)
    x = torch.randn(5, 2, dtype=torch.float64)
    sigma = torch.full((5,), 0.3, dtype=torch.float64)
    h = 1e-6
    fd = torch.stack(
        [
            (net.log_density(x + h * e, sigma) - net.log_density(x - h * e, sigma)) / (2 * h)
            for e in torch.eye(2, dtype=torch.float64)
        ],
        dim=1,
    )
    torch.testing.assert_close(net.score(x, sigma), fd, rtol=1e-6, atol=1e-8)


def test_learning_rate_schedule():
    cfg = ToyTrainConfig()
    assert learning_rate(cfg, 0) == 1e-2 and learning_rate(cfg, 511) == 1e-2
    assert abs(learning_rate(cfg, 4 * 512 - 1) - 1e-2 / 2) < 1e-12


def test_training_against_exact_score_lowers_loss():
    cfg = ToyTrainConfig(width=16, iterations=120, batch_size=512, seed=0)
    net, losses = train_toy_model(cfg)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first
    assert not net.training


def test_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(1)
    net = ToyModel(ToyModelConfig(width=8)).eval()
    with torch.no_grad():
        net.gain.fill_(0.5)
    path = tmp_path / "m.safetensors"
    save_toy_model(path, net, {"training": {"width": 8}})
    back, meta = load_toy_model(path)
    x, s = torch.randn(4, 2), torch.full((4,), 0.2)
    torch.testing.assert_close(back(x, s), net(x, s))
    assert meta["training"] == {"width": 8}

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserInputError, match="corrupt"):
        load_toy_model(corrupt)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(UserInputError):
        load_toy_model(garbage)
    with pytest.raises(UserInputError, match="not found"):
        load_toy_model(tmp_path / "missing.safetensors")


def test_warmup_and_gain_init():
    cfg = ToyTrainConfig(warmup=100)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4) and learning_rate(cfg, 99) == pytest.approx(1e-2)
    net, _ = train_toy_model(
        ToyTrainConfig(width=8, iterations=1, batch_size=16, gain_init=-0.25, lr_ref=1e-9)
    )
    assert net.gain.item() == pytest.approx(-0.25, abs=1e-6)


def test_heldout_loss_is_the_exact_loss():
    # The untrained model is the Gaussian prior: its held-out loss is sigma^2 ||prior score - true score||^2.
    from autoguidance.toy.mixture import ToyMixture
    from autoguidance.toy.train import heldout_loss

    mixture = ToyMixture((0,))
    cfg = ToyTrainConfig()
    net = ToyModel(ToyModelConfig(width=8)).eval()
    gen = torch.Generator().manual_seed(3)
    y = mixture.sample(4096, 0.0, generator=gen)
    sigma = (cfg.p_mean + cfg.p_std * torch.randn(4096, generator=gen)).exp()
    x = y + sigma[:, None] * torch.randn(4096, 2, generator=gen)
    prior = -x / (0.25 + sigma[:, None] ** 2)
    expected = (sigma[:, None] ** 2 * (prior - mixture.score(x, sigma)).square()).sum(1).mean()
    assert heldout_loss(net, mixture, cfg, num_samples=4096, seed=3) == pytest.approx(
        float(expected), rel=1e-4
    )


def test_recipes_and_model_seeds():
    from autoguidance.toy.experiment import model_specs

    paper = model_specs("paper", 0)
    assert [paper[k]["seed"] for k in ("main", "guide", "uncond")] == [1, 2, 3]
    assert paper["main"]["iterations"] == 4096 and paper["main"]["batch_size"] == 4096
    assert all(m["gain_init"] == 0 and m["warmup"] == 0 for m in paper.values())
    assert paper["uncond"]["classes"] == [0, 1] and paper["guide"]["width"] == 32
    ours = model_specs("default", 2)
    # The default guide is the main run stopped early: same width and seed, 1/8 of the iterations.
    assert [ours[k]["seed"] for k in ("main", "guide", "uncond")] == [7, 7, 9]
    assert {**ours["guide"], "iterations": 4096} == ours["main"] and ours["guide"]["iterations"] == 512
    assert all(m["gain_init"] < 0 for m in ours.values())
    guide = model_specs("default", 0, guide_width=16, guide_iterations=100, guide_ema=0.05)["guide"]
    assert (guide["width"], guide["iterations"], guide["ema_sigma_rel"]) == (16, 100, 0.05)
    with pytest.raises(UserInputError, match="recipe must be one of"):
        model_specs("fancy", 0)
