"""Sweeps under torchrun: rank 0 talks to the store, every rank generates its share of each configuration.

Rank 0 runs the sweep (popping configurations from the store) and, before evaluating one, sends it to the
other ranks as JSON (bytes in a tensor: nothing is unpickled); they join the sharded generation
(`evaluator.generate` shards seeds by whole batches and gathers the images) and wait for the next one.
An empty message ends the loop. Without torchrun these are no-ops around the plain evaluator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def broadcast_json(obj: Any | None) -> Any | None:
    """Rank 0's `obj` (JSON-able, or None) on every rank."""
    dist = _dist()
    if dist is None:
        return obj
    data = b"" if obj is None else json.dumps(obj).encode()
    size = torch.tensor([len(data)], dtype=torch.int64)
    dist.broadcast(size, 0)
    buf = torch.zeros(int(size), dtype=torch.uint8)
    if dist.get_rank() == 0 and len(data):
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if int(size):
        dist.broadcast(buf, 0)
    return json.loads(bytes(buf.tolist()).decode()) if int(size) else None


def leader(evaluate: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Rank 0's evaluator: announce each configuration to the other ranks, then evaluate it too."""

    def announced(config: dict) -> dict:
        broadcast_json(config)
        return evaluate(config)

    return announced


def follow(evaluate: Callable[[dict], dict]) -> None:
    """Ranks > 0: evaluate each configuration rank 0 announces, until it sends the end."""
    while (config := broadcast_json(None)) is not None:
        evaluate(config)


def finish() -> None:
    """Rank 0: tell the other ranks that the sweep is over."""
    if _dist() is not None:
        broadcast_json(None)
