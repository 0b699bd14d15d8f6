"""EDM2 pickles: written here in EDM2's persistent-class format (plain pickle around a module-source
record, no EDM2 code), loaded without executing anything, and compared with our own network."""

import math
import os
import pickle
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from autoguidance.cli import main as cli_main
from autoguidance.errors import UserInputError
from autoguidance.interop.edm2_convert import build_edm2_network, load_edm2_pickle, qkv_to_edm2
from autoguidance.interop.edm2_pickle import read_edm2_pickle
from autoguidance.nets.precond import EDM2Denoiser, NetConfig
from autoguidance.nets.unet import Block

pytestmark = pytest.mark.usefixtures("one_thread")

# --- a writer of EDM2's format ------------------------------------------------------------------------
# EDM2 pickles each network module as a call persistence._reconstruct_persistent_obj(meta), meta =
# {type: "class", version, module_src, class_name, state}. The function only needs to be importable
# under that name while pickling; a fake module provides it.
_persistence = types.ModuleType("torch_utils.persistence")


def _reconstruct_persistent_obj(meta):  # never called: loading must not resolve it to this
    raise AssertionError("the real reconstructor must not run")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
MODULE_SRC = "import os\nos.system('echo pwned > /tmp/should_not_exist')\n"


class Persistent(nn.Module):
    """A module that pickles like an EDM2 persistent object of class `class_name`."""

    def __init__(self, class_name, **init_kwargs):
        super().__init__()
        self.class_name = class_name
        self._init_args = ()
        self._init_kwargs = init_kwargs

    def __reduce__(self):
        state = dict(self.__dict__)
        state.pop("class_name")
        meta = dict(type="class", version=6, module_src=MODULE_SRC, class_name=self.class_name, state=state)
        return (_reconstruct_persistent_obj, (meta,), None)


def _mpconv(weight):
    m = Persistent(
        "MPConv", in_channels=weight.shape[1], out_channels=weight.shape[0], kernel=list(weight.shape[2:])
    )
    m.out_channels = weight.shape[0]
    m.weight = nn.Parameter(weight.clone())
    return m


def _fourier(src):
    m = Persistent("MPFourier", num_channels=src.freqs.numel())
    m.register_buffer("freqs", src.freqs.clone())
    m.register_buffer("phases", src.phases.clone())
    return m


def _block(ours: Block):
    m = Persistent("Block", flavor=ours.flavor, resample_mode=ours.resample_mode)
    m.emb_gain = nn.Parameter(ours.emb_gain.detach().clone())
    for name in ("conv_res0", "emb_linear", "conv_res1"):
        setattr(m, name, _mpconv(getattr(ours, name).weight.detach()))
    m.conv_skip = _mpconv(ours.conv_skip.weight.detach()) if ours.conv_skip is not None else None
    if ours.attn is not None:
        m.num_heads = ours.attn.num_heads
        m.attn_qkv = _mpconv(qkv_to_edm2(ours.attn.qkv.weight.detach(), ours.attn.num_heads))
        m.attn_proj = _mpconv(ours.attn.proj.weight.detach())
    else:
        m.attn_qkv = m.attn_proj = None
    return m


def edm2_pickle_bytes(net: EDM2Denoiser, init_kwargs: dict, extra: dict | None = None, protocol=4) -> bytes:
    """Our network's weights laid out as EDM2's Precond/UNet/Block tree, pickled in EDM2's format."""
    u = net.unet
    unet = Persistent("UNet")
    unet.out_gain = nn.Parameter(u.out_gain.detach().clone())
    unet.emb_fourier = _fourier(u.emb_fourier)
    unet.emb_noise = _mpconv(u.emb_noise.weight.detach())
    unet.emb_label = _mpconv(u.emb_label.weight.detach()) if u.emb_label is not None else None
    unet.enc = nn.ModuleDict(
        {k: (_mpconv(m.weight.detach()) if k.endswith("_conv") else _block(m)) for k, m in u.enc.items()}
    )
    unet.dec = nn.ModuleDict({k: _block(m) for k, m in u.dec.items()})
    unet.out_conv = _mpconv(u.out_conv.weight.detach())
    precond = Persistent("Precond", **init_kwargs)
    precond.unet = unet
    precond.logvar_fourier = _fourier(net.logvar_fourier)
    precond.logvar_linear = _mpconv(net.logvar_linear.weight.detach())
    sys.modules["torch_utils"] = types.ModuleType("torch_utils")
    sys.modules["torch_utils.persistence"] = _persistence
    try:
        return pickle.dumps({"ema": precond, **(extra or {})}, protocol=protocol)
    finally:
        del sys.modules["torch_utils.persistence"], sys.modules["torch_utils"]


def _config(**kw):
    base = dict(
        img_resolution=8,
        img_channels=3,
        label_dim=5,
        model_channels=64,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
    )
    return NetConfig(**{**base, **kw})


def _random_net(config, seed=0):
    torch.manual_seed(seed)
    net = build_edm2_network(config)  # our network with EDM2's head rule
    with torch.no_grad():  # gains are 0 at init: make them non-zero so that every weight matters
        for name, p in net.named_parameters():
            if p.ndim == 0:
                p.fill_(0.5 + 0.1 * (hash(name) % 7))
    return net.eval()


def _kwargs(config: NetConfig):
    return dict(
        img_resolution=config.img_resolution,
        img_channels=config.img_channels,
        label_dim=config.label_dim,
        model_channels=config.model_channels,
        channel_mult=list(config.channel_mult),
        num_blocks=config.num_blocks,
        attn_resolutions=list(config.attn_resolutions),
        use_fp16=True,
        dropout=0.0,
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
    enc = Persistent(
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
    with pytest.raises(UserInputError, match="unknown class 'Backdoo'"):
        read_edm2_pickle(path)
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
