"""`autoguidance train`: train an EDM2 denoiser on a dataset (one process, or many under torchrun).

    autoguidance train --dataset mnist --preset s --cond --duration 1048576 --batch 64 --out runs/s
    torchrun --nproc_per_node 2 $(which autoguidance) train ...   (same run, gradients averaged)

Every length and interval is counted in training images; the run takes ceil(duration / batch) iterations,
and intervals are rounded up to whole iterations. Rerunning the same command resumes from the run
folder's training state; SIGINT / SIGTERM save that state before exiting.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from ..io import atomic
from ..nets.presets import PRESET_NAMES
from ..seeds import MAX_SEED
from ..training import loop
from ..training.export import parse_sigma_rels
from .options import device_option, int_list, progress_option, renamed_fields

_IMAGES = click.IntRange(min=1)
# NetConfig / TrainConfig field -> the flag that sets it, for error messages.
_FLAGS = {
    "model_channels": "--channels",
    "channel_mult": "--channel-mult",
    "num_blocks": "--blocks",
    "attn_resolutions": "--attn",
    "batch_size": "--batch",
    "duration": "--duration",
    "lr_ref": "--lr",
    "p_std": "--p-std",
}


def _iterations(images: int | None, batch: int) -> int | None:
    return None if images is None else -(-images // batch)


@click.command("train")
@click.option("--dataset", required=True, help="mnist, digits (with :train/:test/:all), a folder or .zip.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="s", show_default=True, help="Model size.")
@click.option("--cond/--uncond", default=True, show_default=True, help="Class-conditional or unconditional.")
@click.option("--duration", type=_IMAGES, required=True, help="Training length in images.")
@click.option(
    "--batch", type=_IMAGES, default=64, show_default=True, help="Images per iteration, over all processes."
)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder (created).")
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="lr_ref [default: 0.01]."
)
@click.option(
    "--t-ref", type=_IMAGES, default=None, help="Images before the 1/sqrt(t) decay [default: 2000 x batch]."
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=None,
    help="Images of linear warm-up [default: 200 x batch].",
)
@click.option("--p-mean", type=float, default=None, help="Mean of ln sigma in training [default: -0.8].")
@click.option(
    "--p-std",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Std of ln sigma [default: 1.6].",
)
@click.option("--ema", "ema", default=None, help="Tracked EMA sigma_rels [default: 0.05,0.10].")
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Dropout probability [default: 0].",
)
@click.option(
    "--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Weights, data order, noise [default: 0]."
)
@click.option(
    "--snapshot-every", type=_IMAGES, default=None, help="Images per EMA snapshot [default: 32768]."
)
@click.option(
    "--checkpoint-every", type=_IMAGES, default=None, help="Images per training-state save [default: 131072]."
)
@click.option("--channels", type=_IMAGES, default=None, help="Architecture: width at full resolution.")
@click.option("--channel-mult", default=None, help="Architecture: width multiples per level, e.g. 1,2,2,2.")
@click.option("--blocks", type=_IMAGES, default=None, help="Architecture: blocks per level.")
@click.option("--attn", default=None, help="Architecture: resolutions with attention, e.g. 8 or 16,8; none.")
@device_option
@click.option("--stop-after", type=_IMAGES, default=None, help="Stop (resumably) after this many images.")
@click.option(
    "--log-every", type=_IMAGES, default=640, show_default=True, help="Images per log.jsonl record."
)
@progress_option
def train(
    dataset: str,
    preset: str,
    cond: bool,
    duration: int,
    batch: int,
    out_dir: str,
    lr: float | None,
    t_ref: int | None,
    warmup: int | None,
    p_mean: float | None,
    p_std: float | None,
    ema: str | None,
    dropout: float | None,
    seed: int | None,
    snapshot_every: int | None,
    checkpoint_every: int | None,
    channels: int | None,
    channel_mult: str | None,
    blocks: int | None,
    attn: str | None,
    device: str,
    stop_after: int | None,
    log_every: int,
    progress: bool,
) -> None:
    """Train an EDM2 denoiser; writes network-final, network-ema-* and EMA snapshots into --out.

    Images whose side is not a power of two (e.g. 28) are padded to the next one (32) with black, and
    generation crops them back. A folder without dataset.json labels needs --uncond.

    \f
    (Long only by its parameter list: click passes one argument per option.)
    """
    given = {
        "lr_ref": lr,
        "t_ref": _iterations(t_ref, batch),
        "warmup": _iterations(warmup, batch),
        "p_mean": p_mean,
        "p_std": p_std,
        "ema_sigma_rels": None if ema is None else tuple(parse_sigma_rels(ema)),
        "dropout": dropout,
        "seed": seed,
        "snapshot_every": snapshot_every,
        "checkpoint_every": checkpoint_every,
        "model_channels": channels,
        "channel_mult": None if channel_mult is None else int_list("--channel-mult", channel_mult),
        "num_blocks": blocks,
        "attn_resolutions": None if attn is None else int_list("--attn", attn, allow_none=True),
    }
    with renamed_fields(_FLAGS):
        config = loop.TrainConfig(
            dataset=dataset,
            preset=preset,
            cond=cond,
            batch_size=batch,
            duration=duration,
            **{k: v for k, v in given.items() if v is not None},  # unset options keep TrainConfig's defaults
        )
        atomic.check_dir(out_dir, "--out")  # before loading data or building anything
        result = loop.train(
            config,
            out_dir,
            progress=progress,
            device=device,
            stop_after=_iterations(stop_after, batch),
            log_every=_iterations(log_every, batch),
        )
    _report(result, out_dir)


def _report(result: loop.TrainResult, out_dir: str) -> None:
    """One line: finished, stopped, or interrupted by a signal (then exit with 128 + its number)."""
    main = os.environ.get("RANK", "0") == "0"  # under torchrun, one summary line is enough
    where = f"iteration {result.steps} ({result.images} images): {out_dir}"
    if result.signal is not None:
        if main:
            name = signal.Signals(result.signal).name
            click.echo(
                f"interrupted by {name} at {where}; state saved, rerun the command to continue", err=True
            )
        sys.exit(128 + result.signal)
    if main:
        state = "finished" if result.finished else "stopped (rerun to continue)"
        click.echo(f"{state} at {where}", err=True)
