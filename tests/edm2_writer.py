"""Writes pickles in EDM2's persistent-class format for the tests, without EDM2's code: our network's
weights laid out as EDM2's module tree, pickled with plain pickle machinery."""

import pickle
import sys
import types

import torch
from torch import nn

from autoguidance.interop.edm2_convert import build_edm2_network, qkv_to_edm2
from autoguidance.nets.precond import EDM2Denoiser, NetConfig
from autoguidance.nets.unet import Block

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
