"""Writes pickles in the format of EDM2's own training snapshots, for the tests, without EDM2's code.

What EDM2 writes (read off `../shared/fixtures/edm2-reference-format-16px.pkl`, and checked against it
by `test_writer_matches_the_fixture`): a `dnnlib.util.EasyDict` (a dict subclass, pickled as NEWOBJ +
SETITEMS) with `encoder`, `dataset_kwargs` (a plain dict), `loss_fn` and `ema`. Every object of a
persistent class pickles as `torch_utils.persistence._reconstruct_persistent_obj(meta)`, meta =
{type: "class", version, module_src, class_name, state}, state being the object's `__dict__` with its
constructor's `_init_args` (positional) and `_init_kwargs` last. The network under `ema` is float16
with requires_grad off; torch's own reducers pickle its tensors (`_rebuild_parameter` around
`_rebuild_tensor_v2` over `torch.storage._load_from_bytes`). Attributes set to None (an absent
`conv_skip`) sit in the state, not among the modules.
"""

import collections
import dataclasses
import io
import pickle
import pickletools
import sys
import types

import torch
from torch import nn

from autoguidance.io.edm2 import qkv_to_edm2
from autoguidance.io.restricted_pickle import ObjectRecord, PersistentRecord, loads
from autoguidance.nets.precond import EDM2Denoiser, NetConfig
from autoguidance.nets.unet import ATTN_BALANCE, CLIP_ACT, RES_BALANCE, Block

# The two modules EDM2's pickles name, stood in for while pickling: never importable while loading.
_persistence = types.ModuleType("torch_utils.persistence")
_dnnlib_util = types.ModuleType("dnnlib.util")


def _reconstruct_persistent_obj(meta):  # never called: loading must not resolve it to this
    raise AssertionError("the real reconstructor must not run")


class EasyDict(dict):
    """dnnlib's attribute dict, as far as pickling sees it."""


_reconstruct_persistent_obj.__module__ = _persistence.__name__
_persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
EasyDict.__module__ = _dnnlib_util.__name__
_dnnlib_util.EasyDict = EasyDict
MODULE_SRC = "import os\nos.system('echo pwned > /tmp/should_not_exist')\n"


def _persistent_reduce(obj, class_name):
    state = {k: v for k, v in obj.__dict__.items() if k not in ("_class_name", "_init_args", "_init_kwargs")}
    state["_init_args"], state["_init_kwargs"] = obj._init_args, obj._init_kwargs
    meta = dict(type="class", version=6, module_src=MODULE_SRC, class_name=class_name, state=state)
    return (_reconstruct_persistent_obj, (meta,), None)


class Persistent(nn.Module):
    """A module that pickles like an EDM2 persistent object of class `class_name`."""

    def __init__(self, class_name, *init_args, **init_kwargs):
        super().__init__()
        self._class_name = class_name
        self._init_args = tuple(init_args)
        self._init_kwargs = init_kwargs

    def __reduce__(self):
        return _persistent_reduce(self, self._class_name)


class PersistentObject:
    """A plain object (EDM2's loss, its pixel encoder) that pickles as a persistent object."""

    def __init__(self, class_name, *init_args, **init_kwargs):
        self._class_name = class_name
        self._init_args = tuple(init_args)
        self._init_kwargs = init_kwargs

    def __reduce__(self):
        return _persistent_reduce(self, self._class_name)


def _frozen(t):
    return nn.Parameter(t.detach().clone(), requires_grad=False)


def _mpconv(weight):
    m = Persistent("MPConv", weight.shape[1], weight.shape[0], kernel=list(weight.shape[2:]))
    m.out_channels = weight.shape[0]
    m.weight = _frozen(weight)
    return m


def _fourier(src):
    m = Persistent("MPFourier", src.freqs.numel())
    m.register_buffer("freqs", src.freqs.clone())
    m.register_buffer("phases", src.phases.clone())
    return m


def _block(ours: Block, in_channels, emb_channels, attention):
    kwargs = {"flavor": ours.flavor}
    if ours.resample_mode != "keep":
        kwargs["resample_mode"] = ours.resample_mode
    if attention is not None:
        kwargs["attention"] = attention
    m = Persistent("Block", in_channels, ours.out_channels, emb_channels, **kwargs)
    m.out_channels, m.flavor = ours.out_channels, ours.flavor
    m.resample_filter, m.resample_mode = [1, 1], ours.resample_mode
    m.num_heads = ours.attn.num_heads if ours.attn is not None else 0
    m.dropout, m.res_balance, m.attn_balance, m.clip_act = 0, RES_BALANCE, ATTN_BALANCE, int(CLIP_ACT)
    m.emb_gain = _frozen(ours.emb_gain)
    m.conv_res0 = _mpconv(ours.conv_res0.weight)
    m.emb_linear = _mpconv(ours.emb_linear.weight)
    m.conv_res1 = _mpconv(ours.conv_res1.weight)
    m.conv_skip = _mpconv(ours.conv_skip.weight) if ours.conv_skip is not None else None
    if ours.attn is not None:
        m.attn_qkv = _mpconv(qkv_to_edm2(ours.attn.qkv.weight.detach(), ours.attn.num_heads))
        m.attn_proj = _mpconv(ours.attn.proj.weight)
    else:
        m.attn_qkv = m.attn_proj = None
    return m


def _unet(net: EDM2Denoiser, init_kwargs: dict):
    u, c = net.unet, net.config
    unet = Persistent("UNet", **init_kwargs)
    unet.label_balance, unet.concat_balance = c.label_balance, c.concat_balance
    unet.out_gain = _frozen(u.out_gain)
    unet.emb_fourier = _fourier(u.emb_fourier)
    unet.emb_noise = _mpconv(u.emb_noise.weight)
    unet.emb_label = _mpconv(u.emb_label.weight) if u.emb_label is not None else None
    emb = u.emb_noise.weight.shape[0]
    # EDM2 passes `attention=` to the level blocks only; the decoder's first block always attends.
    unet.enc = nn.ModuleDict()
    skips, cin = [], c.img_channels + 1
    for name, m in u.enc.items():
        if name.endswith("_conv"):
            unet.enc[name] = _mpconv(m.weight)
        else:
            res = int(name.split("x")[0])
            level_block = "_block" in name
            unet.enc[name] = _block(m, cin, emb, (res in c.attn_resolutions) if level_block else None)
        cin = m.weight.shape[0] if name.endswith("_conv") else m.out_channels
        skips.append(cin)
    unet.dec = nn.ModuleDict()
    for name, m in u.dec.items():
        res = int(name.split("x")[0])
        attention = (
            True if name.endswith("_in0") else (res in c.attn_resolutions if "_block" in name else None)
        )
        cin_block = cin + skips.pop() if "_block" in name else cin
        unet.dec[name] = _block(m, cin_block, emb, attention)
        cin = m.out_channels
    unet.out_conv = _mpconv(u.out_conv.weight)
    return unet


_PRECOND_ONLY = ("use_fp16", "sigma_data", "logvar_channels")


def precond(net: EDM2Denoiser, init_kwargs: dict):
    """Our network's weights laid out as EDM2's Precond/UNet/Block tree, float16 as EDM2 saves `ema`."""
    c = net.config
    p = Persistent("Precond", **init_kwargs)
    p.img_resolution, p.img_channels, p.label_dim = c.img_resolution, c.img_channels, c.label_dim
    p.use_fp16, p.sigma_data = bool(init_kwargs.get("use_fp16", True)), c.sigma_data
    p.unet = _unet(net, {k: v for k, v in init_kwargs.items() if k not in _PRECOND_ONLY})
    p.logvar_fourier = _fourier(net.logvar_fourier)
    p.logvar_linear = _mpconv(net.logvar_linear.weight)
    return p.to(torch.float16).eval()


def snapshot(net: EDM2Denoiser, init_kwargs: dict, extra: dict | None = None) -> EasyDict:
    """The dictionary EDM2's training loop saves: encoder, dataset arguments, loss, and `ema`."""
    loss = PersistentObject("EDM2Loss")
    loss.P_mean, loss.P_std, loss.sigma_data = -0.4, 1.0, 0.5
    data = EasyDict(
        encoder=PersistentObject("StandardRGBEncoder"),
        dataset_kwargs={"class_name": "training.dataset.ImageFolderDataset", "path": "none"},
        loss_fn=loss,
    )
    data["ema"] = precond(net, init_kwargs)
    data.update(extra or {})
    return data


def dumps(obj, protocol=4) -> bytes:
    """Pickle with the stand-in modules importable under EDM2's names."""
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    saved = {n: sys.modules.get(n) for n in names}
    sys.modules.update(
        {
            "torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": _persistence,
            "dnnlib": types.ModuleType("dnnlib"),
            "dnnlib.util": _dnnlib_util,
        }
    )
    try:
        return pickle.dumps(obj, protocol=protocol)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def edm2_pickle_bytes(net: EDM2Denoiser, init_kwargs: dict, extra: dict | None = None, protocol=4) -> bytes:
    """A whole EDM2 snapshot file for `net` (see `snapshot`)."""
    return dumps(snapshot(net, init_kwargs, extra), protocol=protocol)


# --- comparing two files' structure ----------------------------------------------------------------
def globals_named(data: bytes) -> set[tuple[str, str]]:
    """Every (module, name) a pickle references (GLOBAL and STACK_GLOBAL, memoised strings followed)."""
    out, pushed, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            out.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            out.add((pushed[-2], pushed[-1]))
        if op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.name not in ("FRAME", "PROTO"):
            pushed.append(arg if isinstance(arg, str) else None)
    return out


def replace_global(data: bytes, old: tuple[str, str], new: tuple[str, str]) -> bytes:
    """`data` with the protocol-4 reference to global `old` (two short strings and STACK_GLOBAL) naming
    `new` instead; the enclosing frame's length is corrected so that the file stays well-formed."""

    def ref(module, name):
        return (
            b"\x8c"
            + bytes([len(module)])
            + module.encode()
            + b"\x94\x8c"
            + bytes([len(name)])
            + name.encode()
        )

    pos = data.index(ref(*old))
    delta = len(ref(*new)) - len(ref(*old))
    frames = [p for op, _, p in pickletools.genops(data) if op.name == "FRAME" and p < pos]
    out = bytearray(data[:pos] + ref(*new) + data[pos + len(ref(*old)) :])
    if frames:
        start = frames[-1] + 1
        length = int.from_bytes(out[start : start + 8], "little") + delta
        out[start : start + 8] = length.to_bytes(8, "little")
    return bytes(out)


def structure(data: bytes) -> dict:
    """What a file holds apart from its numbers: the top-level type and keys, and for every persistent
    object its path, class, constructor arguments, plain attributes, child modules, and each tensor's
    dtype, shape and requires_grad."""
    obj = loads(data)
    out = {"top": (type(obj).__name__, list(obj)), "records": {}}

    def walk(rec, path):
        if isinstance(rec, PersistentRecord):
            tensors = {}
            for group in ("_parameters", "_buffers"):
                for k, t in (rec.state.get(group) or {}).items():
                    tensors[k] = None if t is None else (str(t.dtype), tuple(t.shape), t.requires_grad)
            out["records"][path] = {
                "class": rec.class_name,
                "version": rec.version,
                "state_keys": [k for k in rec.state if not k.startswith("_") or k.startswith("_init")][-2:],
                "init_args": rec.init_args,
                "init_kwargs": rec.init_kwargs,
                "attributes": {k: v for k, v in rec.attributes().items() if not isinstance(v, ObjectRecord)},
                "modules": list(rec.modules),
                "tensors": tensors,
            }
        elif isinstance(rec, ObjectRecord):
            out["records"][path] = {"container": rec.type_name, "modules": list(rec.modules)}
        for k, child in rec.modules.items() if isinstance(rec, (PersistentRecord, ObjectRecord)) else ():
            walk(child, f"{path}.{k}")

    for key, value in obj.items():
        if isinstance(value, (PersistentRecord, ObjectRecord)):
            walk(value, key)
        else:
            out["records"][key] = value
    return out


def storage_header(data: bytes) -> list[str]:
    """The opcodes of the first tensor storage's legacy serialisation (torch's own reducer writes it)."""
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINBYTES", "BINBYTES"):
            buf, names = io.BytesIO(arg), []
            for _ in range(5):
                names += [op.name for op, _, _ in pickletools.genops(buf)]
            return names
    return []


# --- small networks for the tests --------------------------------------------------------------------
def _config(**kw):
    base = dict(
        img_resolution=8,
        img_channels=3,
        label_dim=5,
        model_channels=64,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
        edm2_heads=True,
    )
    return NetConfig(**{**base, **kw})


def _random_net(config, seed=0):
    """A random network whose weights survive EDM2's float16 snapshot exactly (they are float16 values),
    with non-zero gains so that every weight matters."""
    torch.manual_seed(seed)
    net = EDM2Denoiser(dataclasses.replace(config, edm2_heads=True))  # EDM2's files: EDM2's head rule
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 0:
                p.fill_(0.5 + 0.1 * (hash(name) % 7))
            p.copy_(p.half().float())
        for b in net.buffers():
            b.copy_(b.half().float())
    return net.eval()


def _kwargs(config: NetConfig):
    """The constructor arguments EDM2's training scripts pass (what its pickles store)."""
    return dict(
        img_resolution=config.img_resolution,
        img_channels=config.img_channels,
        label_dim=config.label_dim,
        model_channels=config.model_channels,
        channel_mult=list(config.channel_mult),
        num_blocks=config.num_blocks,
        attn_resolutions=list(config.attn_resolutions),
    )


__all__ = ["collections", "EasyDict", "Persistent", "PersistentObject", "edm2_pickle_bytes", "structure"]
