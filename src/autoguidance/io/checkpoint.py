"""Checkpoints: safetensors for the tensors plus JSON metadata in the safetensors header.

Loading never executes code (no pickle). Every failure to read or validate a file is a `UserInputError`
whose message names the file and the problem, so the CLI can report it in one line.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserInputError
from . import atomic

METADATA_KEY = "autoguidance"
FORMAT_VERSION = 1


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Atomically write `tensors` and JSON-serialisable `metadata` to a .safetensors file."""
    meta = {"format_version": FORMAT_VERSION, **metadata}
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True)}
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic.write_with(path, lambda tmp: _save_file(contiguous, tmp, header))


def _save_file(tensors: dict[str, torch.Tensor], tmp: Path, header: dict[str, str]) -> None:
    """safetensors' writer, with its I/O failures (it reports them as SafetensorError text with the OS
    error number, e.g. a full disk) raised as OSError so that `atomic` reports them in one line."""
    try:
        save_file(tensors, str(tmp), metadata=header)
    except Exception as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from None


def _parse_metadata(path: Path, header: dict[str, str], label: str) -> dict[str, Any]:
    if METADATA_KEY not in header:
        raise UserInputError(f"{label} {path} has no autoguidance metadata (not written by autoguidance?)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise UserInputError(f"corrupt {label} {path}: metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise UserInputError(f"corrupt {label} {path}: metadata is not a JSON object")
    return meta


def _read(path: Path, label: str, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Open a safetensors file once: (tensors, or {} when not asked for; parsed JSON metadata)."""
    if not path.is_file():
        raise UserInputError(f"{label} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as exc:  # safetensors raises several types for damaged files
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise UserInputError(f"corrupt {label} {path}: {detail}") from None
    return tensors, _parse_metadata(path, header, label)


def read_metadata(path: str | os.PathLike, label: str = "checkpoint") -> dict[str, Any]:
    """The JSON metadata alone, from the safetensors header (no tensor data is read). `label` names the
    file in error messages ("checkpoint", "snapshot", ...)."""
    return _read(Path(path), label, with_tensors=False)[1]


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], label: str) -> None:
    """Load `tensors` into `module`, with any missing, unexpected or misshapen tensor reported as one
    UserInputError line that starts with `label` (e.g. "checkpoint runs/s/net.safetensors")."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise UserInputError(
            f"{label} does not match its network: {len(missing)} missing tensors (e.g. {missing[:2]}), "
            f"{len(extra)} unexpected (e.g. {extra[:2]})"
        )
    for name, t in expected.items():
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise UserInputError(
                f"{label}: tensor {name!r} has shape {tuple(tensors[name].shape)}, the network needs "
                f"{tuple(t.shape)}"
            )
    module.load_state_dict(tensors)


def load(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; check that its metadata says `kind` (when given). Returns (tensors, metadata)."""
    path = Path(path)
    tensors, meta = _read(path, "checkpoint", with_tensors=True)
    if kind is not None and meta.get("kind") != kind:
        raise UserInputError(f"checkpoint {path} holds a {meta.get('kind')!r} model, expected {kind!r}")
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UserInputError(f"checkpoint {path} has non-finite values in {name!r}")
    return tensors, meta
