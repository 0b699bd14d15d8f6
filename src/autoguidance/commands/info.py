"""`autoguidance info CKPT`: what a checkpoint holds (network file, EMA snapshot or training state).

Prints the network config, its parameter count and FLOPs per denoiser evaluation, and the rest of the
checkpoint's metadata (training provenance).
"""

from __future__ import annotations

import json
from typing import Any

import click

from .. import checkpoint
from ..errors import UserInputError
from ..nets.flops import count_parameters, flops_per_evaluation
from ..nets.precond import NetConfig, build


def describe(path: str) -> list[str]:
    """The lines that `autoguidance info` prints for the checkpoint at `path`."""
    _, meta = checkpoint.load(path)
    if "net" not in meta:
        raise UserInputError(f"checkpoint {path} ({meta.get('kind')!r}) has no network config to describe")
    config = NetConfig.from_dict(meta["net"])
    net = build(config)  # the architecture alone decides size and cost; the weights do not matter here
    lines = [f"file: {path}", f"kind: {meta.get('kind')}", "network:"]
    lines += [f"  {k}: {_text(v)}" for k, v in config.to_dict().items()]
    flops = flops_per_evaluation(net, config)
    lines.append(f"parameters: {count_parameters(net):,}")
    lines.append(f"flops_per_evaluation: {flops:,} ({flops / 1e9:.3f} GFLOP)")
    lines.append("metadata:")
    lines += [f"  {k}: {_text(v)}" for k, v in sorted(meta.items()) if k not in ("kind", "net")]
    return lines


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


@click.command("info")
@click.argument("ckpt", type=click.Path(dir_okay=False))
def info(ckpt: str) -> None:
    """Describe a checkpoint: network config, parameters, FLOPs per evaluation, training metadata."""
    click.echo("\n".join(describe(ckpt)))
