"""The full training state in one safetensors file, so that a run resumes bit-identically.

Tensors: "net.<name>" (raw weights and buffers), "optim.<param index>.<key>" (Adam's exp_avg, exp_avg_sq,
step), "ema.<key>" (PowerFunctionEMA.state_dict()). JSON metadata: {"kind": "training_state", "step",
...whatever the loop adds (config, elapsed time, provenance)}. No pickle: the optimizer's per-parameter
state is flattened into named tensors, and its hyperparameters are not stored at all because the loop
rebuilds them from the config (and sets the learning rate at every step).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from ..io import checkpoint
from .ema import PowerFunctionEMA

KIND = "training_state"


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as {"<param index>.<key>": tensor} (scalars become 0-d tensors)."""
    out: dict[str, torch.Tensor] = {}
    for index, entries in opt.state_dict()["state"].items():
        for key, value in entries.items():
            out[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], label: str) -> None:
    """Inverse of `optimizer_tensors`: restore per-parameter state, keep `opt`'s own hyperparameters."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index_text, _, key = name.partition(".")
        if not index_text.isdigit() or not key or int(index_text) >= len(params):
            raise UserInputError(f"{label}: unexpected optimizer tensor {name!r} ({len(params)} parameters)")
        state.setdefault(int(index_text), {})[key] = value
    for index, entries in state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entries and entries[key].shape != params[index].shape:
                raise UserInputError(
                    f"{label}: optimizer state {index}.{key} has shape {tuple(entries[key].shape)}, "
                    f"the parameter {tuple(params[index].shape)}"
                )
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def save_training_state(
    path: str | os.PathLike,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    ema: PowerFunctionEMA,
    step: int,
    metadata: dict[str, Any],
) -> None:
    """Atomically write weights, optimizer state and EMA after `step` iterations, with JSON `metadata`."""
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"optim.{k}": v for k, v in optimizer_tensors(opt).items()})
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    checkpoint.save(path, tensors, {**metadata, "kind": KIND, "step": int(step)})


def read_training_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a training state file; UserInputError if missing, corrupt or another kind."""
    tensors, meta = checkpoint.load(path, kind=KIND)
    if not isinstance(meta.get("step"), int) or meta["step"] < 0:
        raise UserInputError(f"training state {path} has no valid step count in its metadata")
    return tensors, meta


def restore_training_state(
    tensors: dict[str, torch.Tensor],
    net: nn.Module,
    opt: torch.optim.Optimizer,
    ema: PowerFunctionEMA,
    path: str | os.PathLike,
) -> None:
    """Load `read_training_state(path)`'s tensors into `net`, `opt` and `ema` in place."""
    groups: dict[str, dict[str, torch.Tensor]] = {"net": {}, "optim": {}, "ema": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in groups:
            raise UserInputError(f"training state {path}: unexpected tensor {name!r}")
        groups[prefix][rest] = value
    checkpoint.load_into(net, groups["net"], f"training state {path}")
    load_optimizer_tensors(opt, groups["optim"], label=f"training state {path}")
    ema.load_state_dict(groups["ema"])
