"""EDM2 pickles: written here in EDM2's persistent-class format (plain pickle around a module-source
record, no EDM2 code), loaded without executing anything, and compared with our own network."""

import math
import os
import pickle
import subprocess
import sys

import pytest
import torch

from autoguidance.cli import main as cli_main
from autoguidance.errors import UserInputError
from autoguidance.io.edm2 import edm2_net_config, load_edm2_pickle, qkv_to_edm2
from autoguidance.io.restricted_pickle import load as read_edm2_pickle
from autoguidance.io.restricted_pickle import loads
from autoguidance.nets.precond import EDM2Denoiser
from autoguidance.nets.unet import Block

pytestmark = pytest.mark.usefixtures("one_thread")

from edm2_writer import (  # noqa: E402
    PersistentObject,
    _config,
    _kwargs,
    _random_net,
    edm2_pickle_bytes,
)


def _evaluate(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = net.config
    x = torch.randn(4, c.img_channels, c.img_resolution, c.img_resolution, generator=g)
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0])
    cond = torch.tensor([0, 1, 2, 4]) if c.label_dim else None
    with torch.no_grad():
        return net(x * sigma[:, None, None, None], sigma, cond)


@pytest.mark.parametrize("protocol", [2, 4])
def test_edm2_pickle_loads_and_matches(tmp_path, protocol):
    config = _config()
    ours = _random_net(config)
    path = tmp_path / "net.pkl"
    path.write_bytes(edm2_pickle_bytes(ours, _kwargs(config), protocol=protocol))
    loaded = load_edm2_pickle(str(path))
    assert loaded.net.config == config and loaded.use_fp16
    torch.testing.assert_close(_evaluate(loaded.net), _evaluate(ours), rtol=0, atol=0)
    assert loaded.extras["loss_fn"].class_name == "EDM2Loss"  # kept as a record: nothing constructed
    assert not os.path.exists("/tmp/should_not_exist")


def test_edm2_defaults_fill_missing_arguments(tmp_path):
    # EDM2's released pickles store only the arguments given at construction; the rest are defaults.
    config = _config(
        model_channels=16,
        channel_mult=(1, 2, 3, 4),
        num_blocks=3,
        attn_resolutions=(16, 8),
        img_resolution=32,
        label_dim=0,
    )
    ours = _random_net(config)
    kwargs = dict(img_resolution=32, img_channels=3, label_dim=0, model_channels=16)
    loaded = load_edm2_pickle(_write(tmp_path, ours, kwargs))
    assert loaded.net.config == config


def _write(tmp_path, net, kwargs, extra=None, name="net.pkl"):
    path = tmp_path / name
    path.write_bytes(edm2_pickle_bytes(net, kwargs, extra))
    return str(path)


def test_attention_heads_follow_edm2_rule(tmp_path):
    # 128 channels at the attention level: EDM2 gives 2 heads, laid out (heads, d, 3) in qkv.
    config = _config(channel_mult=(1, 2))
    ours = _random_net(config)
    loaded = load_edm2_pickle(_write(tmp_path, ours, _kwargs(config))).net
    attn = loaded.unet.dec["4x4_in0"].attn
    assert attn.num_heads == 2
    # EDM2's attention written out from its layout: q, k, v = pixel-normalised split of (heads, d, 3).
    edm2_w = qkv_to_edm2(attn.qkv.weight.detach(), 2)
    x = torch.randn(2, 128, 4, 4)
    from autoguidance.nets.mp import normalize

    w = normalize(edm2_w) / math.sqrt(edm2_w[0].numel())
    y = torch.nn.functional.conv2d(x, w).reshape(2, 2, 64, 3, 16)
    y = y / (1e-4 + y.norm(dim=2, keepdim=True) / math.sqrt(64))
    q, k, v = y.unbind(3)
    a = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(64)).softmax(dim=3)
    out = torch.einsum("nhqk,nhck->nhcq", a, v).reshape(2, 128, 4, 4)
    out = attn.proj(out)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), out, rtol=1e-4, atol=1e-5)


def test_narrow_attention_level_gets_no_attention(tmp_path):
    # channels // 64 = 0 heads: EDM2 builds no attention there; the pickle has no attn weights.
    config = _config(model_channels=16)
    ours = _random_net(config)
    loaded = load_edm2_pickle(_write(tmp_path, ours, _kwargs(config))).net
    assert all(m.attn is None for m in loaded.unet.modules() if isinstance(m, Block))
    torch.testing.assert_close(_evaluate(loaded), _evaluate(ours), rtol=0, atol=0)


def test_encoder_record_with_numpy_arrays(tmp_path):
    import numpy as np

    config = _config()
    ours = _random_net(config)
    enc = PersistentObject(
        "StabilityVAEEncoder",
        vae_name="stabilityai/sd-vae-ft-mse",
        raw_mean=np.array([5.81, 3.25, 0.12, -2.15]),
        final_std=0.5,
    )
    enc.scale = np.float32(0.5)
    loaded = load_edm2_pickle(_write(tmp_path, ours, _kwargs(config), extra={"encoder": enc}))
    assert loaded.encoder.kind == "vae"
    assert loaded.encoder.kwargs["raw_mean"] == pytest.approx([5.81, 3.25, 0.12, -2.15])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + _Evil.target,))


def test_code_execution_refused(tmp_path):
    target = tmp_path / "pwned"
    _Evil.target = str(target)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": _Evil()}))
    with pytest.raises(UserInputError, match="refusing to load"):
        read_edm2_pickle(path)
    # The CLI: exit status 2, one line, nothing ran.
    done = subprocess.run(
        [sys.executable, "-m", "autoguidance", "generate", "--net", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "refusing to load" in done.stderr
    assert not target.exists() and not (tmp_path / "o").exists()


def test_unknown_class_refused(tmp_path):
    config = _config()
    ours = _random_net(config)
    data = edm2_pickle_bytes(ours, _kwargs(config)).replace(b"Precond", b"Backdoo")
    path = tmp_path / "odd.pkl"
    path.write_bytes(data)
    read_edm2_pickle(path)  # an unknown persistent class is data, until it is asked to be a network
    with pytest.raises(UserInputError, match="no Precond network"):
        load_edm2_pickle(path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["generate", "--net", str(path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2


def test_changed_block_constant_refused(tmp_path):
    config = _config()
    path = _write(tmp_path, _random_net(config), {**_kwargs(config), "res_balance": 0.4})
    with pytest.raises(UserInputError, match="res_balance"):
        load_edm2_pickle(path)


def test_weights_not_matching_arguments_refused(tmp_path):
    config = _config()
    path = _write(tmp_path, _random_net(config), {**_kwargs(config), "model_channels": 128})
    with pytest.raises(UserInputError, match="shape|missing"):
        load_edm2_pickle(path)


@pytest.mark.parametrize(("width", "millions"), [(128, 124.7), (192, 280.2)])
def test_edm2_defaults_give_published_sizes(width, millions):
    # EDM2 (Karras et al. 2024, Table 2): XS 125M and S 280M parameters at ImageNet-512. Built from
    # only the arguments EDM2's released pickles store, our network has exactly those sizes.
    kwargs = dict(img_resolution=64, img_channels=4, label_dim=1000, model_channels=width)
    config, _ = edm2_net_config(kwargs)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        net = EDM2Denoiser(config)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == millions


def test_numpy_object_arrays_refused(tmp_path):
    import numpy as np

    config = _config()
    enc = PersistentObject("StandardRGBEncoder", table=np.array([print, 1], dtype=object))
    path = _write(tmp_path, _random_net(config), _kwargs(config), extra={"encoder": enc})
    with pytest.raises(UserInputError, match="builtins.print|not allowed"):
        load_edm2_pickle(path)


def test_numpy_arrays_round_trip_exactly():
    import pickle

    import numpy as np

    values = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(3, dtype=">i4"),
        "scalar": np.float64(0.125),
    }
    for protocol in (2, 4, 5):
        got = loads(pickle.dumps(values, protocol=protocol))
        for key in ("f", "fortran", "big_endian"):
            arr = got[key].to_numpy()
            assert arr.dtype == values[key].dtype and np.array_equal(arr, values[key])
        assert got["scalar"] == 0.125


def test_cfg_presets_guide_with_the_unconditional_network_at_the_main_ema():
    from autoguidance.io.edm2_presets import EDM2_PRESETS

    cfg = {name: p for name, p in EDM2_PRESETS.items() if "-guid-" in name}
    assert len(cfg) >= 6
    for preset in cfg.values():
        assert "-uncond-" in preset.guide and "-uncond-" not in preset.net
        # EDM2's CFG presets take the unconditional guide at the main network's EMA length.
        assert preset.net.rsplit("-", 1)[1] == preset.guide.rsplit("-", 1)[1]
        assert 1.0 < preset.guidance <= 2.0
