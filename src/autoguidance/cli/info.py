"""`autoguidance info`: what a checkpoint holds, or what a preset would build.

    autoguidance info CKPT                               network file, EMA snapshot, training state, toy model
    autoguidance info FILE.pkl                           an EDM2 network pickle: network, loss, dataset
    autoguidance info --preset s --resolution 64         a preset's size and cost, without a checkpoint

Prints the network config, its parameter count and FLOPs per denoiser evaluation, and the rest of the
checkpoint's metadata (training provenance).
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import UserInputError
from ..io import checkpoint
from ..io.networks import is_pickle, load_network
from ..nets.flops import count_parameters, flops_per_evaluation
from ..nets.precond import NetConfig, build
from ..nets.presets import PRESET_NAMES, preset_config


def _network_lines(config: NetConfig) -> list[str]:
    net = build(config)  # the architecture alone decides size and cost; the weights do not matter here
    lines = ["network:"] + [f"  {k}: {_text(v)}" for k, v in config.to_dict().items()]
    flops = flops_per_evaluation(net)
    lines.append(f"parameters: {count_parameters(net):,}")
    lines.append(f"flops_per_evaluation: {flops:,} ({flops / 1e9:.3f} GFLOP)")
    return lines


def _toy_lines(settings: Any) -> list[str]:
    """The toy MP-MLP (toy/model.py): its log-density forward pass is a chain of MP linears; the score
    is its gradient, which costs about twice the forward pass again (reverse mode)."""
    from ..toy.model import ToyModel, ToyModelConfig

    config = ToyModelConfig.from_dict(settings) if isinstance(settings, dict) else None
    if config is None:
        raise UserInputError("toy model checkpoint has no model settings")
    model = ToyModel(config)
    width, depth = config.width, config.depth
    forward = 2 * (4 * width + depth * width * width)  # 2 x MACs of the linears (4 inputs, then width)
    lines = ["toy model:"] + [f"  {k}: {_text(v)}" for k, v in config.to_dict().items()]
    lines.append(f"parameters: {count_parameters(model):,}")
    lines.append(f"flops_log_density: {forward:,} (the score by autograd adds about twice that)")
    return lines


def describe(path: str) -> list[str]:
    """The lines that `autoguidance info` prints for the checkpoint (or EDM2 pickle) at `path`."""
    if is_pickle(path):
        _, meta = load_network(path)  # the restricted unpickler: nothing in the file runs
    else:
        _, meta = checkpoint.load(path)
    lines = [f"file: {path}", f"kind: {meta.get('kind')}"]
    if "net" in meta:
        lines += _network_lines(NetConfig.from_dict(meta["net"]))
        shown = ("kind", "net")
    elif meta.get("kind") == "toy_model":
        lines += _toy_lines(meta.get("model"))
        shown = ("kind", "model")
    else:
        raise UserInputError(f"checkpoint {path} ({meta.get('kind')!r}) has no network config to describe")
    lines.append("metadata:")
    lines += [f"  {k}: {_text(v)}" for k, v in sorted(meta.items()) if k not in shown]
    return lines


def describe_preset(name: str, resolution: int, channels: int, classes: int) -> list[str]:
    """The lines for a preset at a resolution: what `train --preset NAME` builds for such images."""
    config = preset_config(name, resolution, channels, classes)
    return [
        f"preset: {name} at {resolution}x{resolution}x{channels}, {classes} classes",
        *_network_lines(config),
    ]


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


@click.command("info")
@click.argument("ckpt", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None, help="Describe a preset instead.")
@click.option(
    "--resolution", type=click.IntRange(min=1), default=32, show_default=True, help="With --preset."
)
@click.option(
    "--image-channels",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="With --preset: 1 or 3.",
)
@click.option("--classes", type=click.IntRange(min=0), default=0, show_default=True, help="With --preset.")
def info(ckpt: str | None, preset: str | None, resolution: int, image_channels: int, classes: int) -> None:
    """Describe a checkpoint (network config, parameters, FLOPs per evaluation, training metadata), or
    with --preset the network that training would build, without a checkpoint."""
    if (ckpt is None) == (preset is None):
        raise UserInputError("give a checkpoint file or --preset NAME (not both)")
    if preset is not None:
        click.echo("\n".join(describe_preset(preset, resolution, image_channels, classes)))
        return
    click.echo("\n".join(describe(ckpt)))
