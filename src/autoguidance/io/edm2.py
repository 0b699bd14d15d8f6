"""EDM2 network records (from `io.restricted_pickle`) -> the package's own `EDM2Denoiser`, weights mapped.

EDM2's `Precond(img_resolution, img_channels, label_dim, use_fp16, sigma_data, logvar_channels,
**unet_kwargs)` wraps `UNet(model_channels, channel_mult, channel_mult_noise, channel_mult_emb,
num_blocks, attn_resolutions, label_balance, concat_balance, **block_kwargs)`; block kwargs are
resample_filter, channels_per_head, dropout, res_balance, attn_balance, clip_act. Our network fixes the
block constants at EDM2's values (config G, App. B.7), so a pickle that changes them is refused rather
than loaded into a different network. Arguments the pickle leaves out take EDM2's defaults; the weights
are then checked tensor by tensor against the network built from them.

Names agree with ours except attention: EDM2 has `attn_qkv` / `attn_proj` on the block and splits the
qkv output channels as (heads, channels per head, 3); we have `attn.qkv` / `attn.proj` split as
(3, heads, channels per head). The rows are permuted accordingly (each row is normalised on its own,
so a row permutation is exact). EDM2 gives a block `channels // 64` heads, hence no attention at all
when an attention level has fewer than 64 channels; we reproduce both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from ..nets.precond import EDM2Denoiser, NetConfig
from ..nets.unet import ATTN_BALANCE, CHANNELS_PER_HEAD, CLIP_ACT, RES_BALANCE, Block
from .checkpoint import load_into
from .restricted_pickle import ArrayRecord, ObjectRecord, PersistentRecord, load, to_json

# EDM2's classes inside a network (under `ema`) that this module turns into our own objects: nothing else
# may appear there. Outside it (the loss, the dataset's arguments, a user's additions) records stay data.
NETWORK_CLASSES = frozenset({"Precond", "UNet", "Block", "MPConv", "MPFourier"})
ENCODER_CLASSES = frozenset({"StabilityVAEEncoder", "StandardRGBEncoder"})
# EDM2's constructor defaults (UNet and Precond), used for arguments a pickle does not store.
EDM2_DEFAULTS: dict[str, Any] = {
    "model_channels": 192,
    "channel_mult": [1, 2, 3, 4],
    "channel_mult_noise": None,
    "channel_mult_emb": None,
    "num_blocks": 3,
    "attn_resolutions": [16, 8],
    "label_balance": 0.5,
    "concat_balance": 0.5,
    "sigma_data": 0.5,
    "logvar_channels": 128,
    "use_fp16": True,
    "dropout": 0.0,
    "resample_filter": [1, 1],
    "channels_per_head": CHANNELS_PER_HEAD,
    "res_balance": RES_BALANCE,
    "attn_balance": ATTN_BALANCE,
    "clip_act": CLIP_ACT,
}
# Values our network hard-wires (EDM2's defaults): anything else would be a different network.
_FIXED = (
    "channel_mult_noise",
    "channel_mult_emb",
    "resample_filter",
    "channels_per_head",
    "res_balance",
    "attn_balance",
    "clip_act",
)


@dataclass
class EDM2Encoder:
    """EDM2's pixel <-> network-space encoder recorded in a pickle (no VAE weights are pickled).

    kind "rgb": x / 127.5 - 1 (ImageNet-64). kind "vae": the Stability VAE `vae_name`, its raw latents
    normalised per channel by (z - raw_mean) / raw_std * final_std + final_mean (ImageNet-512)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EDM2Checkpoint:
    net: EDM2Denoiser
    encoder: EDM2Encoder | None
    edm2_kwargs: dict[str, Any]  # the constructor arguments as pickled (for provenance)
    use_fp16: bool
    extras: dict[str, Any] = field(default_factory=dict)  # the snapshot's other entries, as inert records


def _plain(value: Any) -> Any:
    """numpy arrays and scalars in constructor kwargs -> lists and Python numbers."""
    if isinstance(value, ArrayRecord):
        value = value.to_numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def edm2_net_config(kwargs: dict[str, Any]) -> tuple[NetConfig, dict[str, Any]]:
    """EDM2 Precond constructor kwargs -> (our NetConfig, the full kwargs with EDM2's defaults)."""
    known = set(EDM2_DEFAULTS) | {"img_resolution", "img_channels", "label_dim"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise UserInputError(f"EDM2 network has constructor arguments this package does not know: {unknown}")
    full = {**EDM2_DEFAULTS, **{k: _plain(v) for k, v in kwargs.items()}}
    for key in ("img_resolution", "img_channels", "label_dim"):
        if key not in kwargs:
            raise UserInputError(f"EDM2 network record lacks the constructor argument {key!r}")
    for key in _FIXED:
        if full[key] != EDM2_DEFAULTS[key]:
            raise UserInputError(
                f"EDM2 network uses {key}={full[key]!r}; this package implements only {EDM2_DEFAULTS[key]!r}"
            )
    config = NetConfig(
        img_resolution=full["img_resolution"],
        img_channels=full["img_channels"],
        label_dim=full["label_dim"],
        model_channels=full["model_channels"],
        channel_mult=tuple(full["channel_mult"]),
        num_blocks=full["num_blocks"],
        attn_resolutions=tuple(full["attn_resolutions"]),
        dropout=float(full["dropout"]),
        label_balance=float(full["label_balance"]),
        concat_balance=float(full["concat_balance"]),
        sigma_data=float(full["sigma_data"]),
        logvar_channels=full["logvar_channels"],
        edm2_heads=True,
    )
    return config, full


def qkv_from_edm2(w: torch.Tensor, heads: int) -> torch.Tensor:
    """EDM2 qkv rows ordered (heads, d, 3) -> ours ordered (3, heads, d)."""
    c3 = w.shape[0]
    return w.reshape(heads, c3 // (3 * heads), 3, *w.shape[1:]).movedim(2, 0).reshape(w.shape)


def qkv_to_edm2(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Ours (3, heads, d) -> EDM2's (heads, d, 3): the inverse of `qkv_from_edm2`."""
    c3 = w.shape[0]
    return w.reshape(3, heads, c3 // (3 * heads), *w.shape[1:]).movedim(0, 2).reshape(w.shape)


def flatten_state(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk a record tree (persistent modules, ModuleDicts) -> {dotted name: tensor} in EDM2's names."""
    state = record.state if isinstance(record, (PersistentRecord, ObjectRecord)) else None
    if not isinstance(state, dict):
        raise UserInputError(f"EDM2 pickle: {prefix or 'the network'} is not a module")
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise UserInputError(f"EDM2 pickle: {prefix}{name} is not a tensor")
            out[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(flatten_state(child, f"{prefix}{name}."))
    return out


def map_edm2_state(edm2: dict[str, torch.Tensor], net: EDM2Denoiser) -> dict[str, torch.Tensor]:
    """EDM2 tensor names and layouts -> ours, for `net` built from `edm2_net_config`."""
    out: dict[str, torch.Tensor] = {}
    heads_of = {
        name: m.attn.num_heads
        for name, m in net.named_modules()
        if isinstance(m, Block) and m.attn is not None
    }
    for name, t in edm2.items():
        block, _, leaf = name.rpartition(".attn_")
        if _:
            kind, _, rest = leaf.partition(".")
            if block not in heads_of:
                raise UserInputError(f"EDM2 pickle: attention weights {name} for a block without attention")
            if kind == "qkv":
                t = qkv_from_edm2(t, heads_of[block])
            name = f"{block}.attn.{kind}.{rest}"
        out[name] = t.to(torch.float32)
    return out


def _find_precond(obj: Any) -> PersistentRecord:
    """The network of a snapshot: EDM2's training loop and post-hoc EMA write an EasyDict (a dict here)
    whose `ema` is the Precond; a bare Precond is accepted too."""
    if isinstance(obj, PersistentRecord) and obj.class_name == "Precond":
        return obj
    if isinstance(obj, dict):
        for key in ("ema", "net"):
            if isinstance(obj.get(key), PersistentRecord) and obj[key].class_name == "Precond":
                return obj[key]
    name = obj.class_name if isinstance(obj, PersistentRecord) else type(obj).__name__
    raise UserInputError(f"EDM2 pickle holds no Precond network (found {name})")


def _check_network_classes(precond: PersistentRecord) -> None:
    """Only EDM2's known network classes (and torch's containers) may make up the network tree."""
    stack = [precond]
    while stack:
        rec = stack.pop()
        if isinstance(rec, PersistentRecord) and rec.class_name not in NETWORK_CLASSES:
            known = ", ".join(sorted(NETWORK_CLASSES))
            raise UserInputError(
                f"EDM2 pickle: the network contains an unknown class {rec.class_name!r}; known: {known}"
            )
        if not isinstance(rec, (PersistentRecord, ObjectRecord)):
            raise UserInputError(f"EDM2 pickle: the network contains a {type(rec).__name__}, not a module")
        stack.extend(child for child in rec.modules.values() if child is not None)


def _encoder(obj: Any) -> EDM2Encoder | None:
    rec = obj.get("encoder") if isinstance(obj, dict) else None
    if not isinstance(rec, PersistentRecord) or rec.class_name not in ENCODER_CLASSES:
        return None
    kwargs = {k: _plain(v) for k, v in rec.init_kwargs.items()}
    return EDM2Encoder("vae" if rec.class_name == "StabilityVAEEncoder" else "rgb", kwargs)


def records_to_network(obj: Any, source: str = "EDM2 pickle") -> EDM2Checkpoint:
    """Rebuild our network (eval mode, float32) from unpickled records; check every tensor."""
    precond = _find_precond(obj)
    _check_network_classes(precond)
    if precond.init_args:
        raise UserInputError(f"{source}: positional constructor arguments are not supported")
    config, full = edm2_net_config(precond.init_kwargs)
    net = EDM2Denoiser(config)
    tensors = map_edm2_state(flatten_state(precond), net)
    load_into(net, tensors, source)  # every tensor present and of the shape its arguments imply
    extras = {k: v for k, v in obj.items() if v is not precond} if isinstance(obj, dict) else {}
    return EDM2Checkpoint(net.eval(), _encoder(obj), full, bool(full["use_fp16"]), extras)


def load_edm2_pickle(path: str) -> EDM2Checkpoint:
    """An EDM2 network pickle -> our network, without executing anything stored in the file."""
    return records_to_network(load(path), source=str(path))


def checkpoint_metadata(ckpt: EDM2Checkpoint) -> dict[str, Any]:
    """What an EDM2 file says besides the weights, as JSON: the constructor arguments, the encoder
    (which a latent network's decoding needs) and the snapshot's other entries (loss, dataset), inert."""
    encoder = ckpt.encoder
    return {
        "edm2_kwargs": ckpt.edm2_kwargs,
        "encoder": None if encoder is None else {"kind": encoder.kind, **encoder.kwargs},
        "edm2_snapshot": {k: to_json(v) for k, v in ckpt.extras.items() if k != "encoder"},
    }
