"""Saving and loading trained toy models: safetensors + JSON metadata (kind "toy_model")."""

from __future__ import annotations

import os
from typing import Any

from ..errors import UserInputError
from ..io import checkpoint
from .model import ToyModel, ToyModelConfig

KIND = "toy_model"


def save_toy_model(path: str | os.PathLike, model: ToyModel, metadata: dict[str, Any]) -> None:
    checkpoint.save(path, model.state_dict(), {**metadata, "kind": KIND, "model": model.config.to_dict()})


def load_toy_model(path: str | os.PathLike, device: str = "cpu") -> tuple[ToyModel, dict[str, Any]]:
    """Rebuild a toy model from its stored config; every mismatch is a one-line UserInputError."""
    tensors, meta = checkpoint.load(path, kind=KIND)
    if not isinstance(meta.get("model"), dict):
        raise UserInputError(f"toy model {path} has no model settings in its metadata")
    model = ToyModel(ToyModelConfig.from_dict(meta["model"]))
    expected = model.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise UserInputError(f"toy model {path}: stored tensors do not match its settings {meta['model']}")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta
