"""`autoguidance train`: train an EDM2 denoiser on a dataset (one process, or many under torchrun).

    autoguidance train --dataset mnist --preset s --cond --duration 1048576 --batch 64 --out runs/s
    torchrun --nproc_per_node 2 $(which autoguidance) train ...   (same run, gradients averaged)

Rerunning the same command resumes from the run folder's training state.
"""

from __future__ import annotations

import os

import click

from ..training import loop
from ..training.export import parse_sigma_rels


@click.command("train")
@click.option("--dataset", required=True, help="mnist, digits (with :train/:test/:all), a folder or .zip.")
@click.option("--preset", default="s", show_default=True, help="Model size: xxs, xs, s, m.")
@click.option("--cond/--uncond", default=True, show_default=True, help="Class-conditional or unconditional.")
@click.option("--duration", type=int, required=True, help="Training length in images.")
@click.option("--batch", type=int, default=64, show_default=True, help="Global batch size (all processes).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--lr", type=float, default=None, help="Reference learning rate lr_ref [default: 0.01].")
@click.option("--t-ref", type=int, default=None, help="Iterations before 1/sqrt(t) decay [default: 2000].")
@click.option("--warmup", type=int, default=None, help="Linear warm-up iterations [default: 200].")
@click.option("--p-mean", type=float, default=None, help="Mean of ln sigma in training [default: -0.8].")
@click.option("--p-std", type=float, default=None, help="Std of ln sigma in training [default: 1.6].")
@click.option("--ema", "ema", default=None, help="Tracked EMA sigma_rels [default: 0.05,0.10].")
@click.option("--dropout", type=float, default=None, help="Dropout probability [default: 0].")
@click.option("--seed", type=int, default=None, help="Seed of weights, data order and noise [default: 0].")
@click.option("--snapshot-every", type=int, default=None, help="Images per EMA snapshot [default: 32768].")
@click.option(
    "--checkpoint-every",
    type=int,
    default=None,
    help="Images between training-state checkpoints [default: 131072].",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Compute device [default: cuda when available].",
)
@click.option("--stop-after", type=int, default=None, help="Stop (resumably) after this many iterations.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Iterations per log.jsonl record.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Draw a progress bar.")
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
    device: str | None,
    stop_after: int | None,
    log_every: int,
    progress: bool,
) -> None:
    """Train an EDM2 denoiser; writes network-final and network-ema-* files into --out."""
    given = {
        "lr_ref": lr,
        "t_ref": t_ref,
        "warmup": warmup,
        "p_mean": p_mean,
        "p_std": p_std,
        "ema_sigma_rels": None if ema is None else tuple(parse_sigma_rels(ema)),
        "dropout": dropout,
        "seed": seed,
        "snapshot_every": snapshot_every,
        "checkpoint_every": checkpoint_every,
    }
    config = loop.TrainConfig(
        dataset=dataset,
        preset=preset,
        cond=cond,
        batch_size=batch,
        duration=duration,
        **{k: v for k, v in given.items() if v is not None},  # unset options keep TrainConfig's defaults
    )
    result = loop.train(
        config, out_dir, progress=progress, device=device, stop_after=stop_after, log_every=log_every
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one summary line is enough
        return
    state = "finished" if result.finished else "stopped (rerun to continue)"
    click.echo(f"{state} at iteration {result.steps} ({result.images} images): {out_dir}", err=True)
