"""`autoguidance generate-diffusers`: images from a diffusers pipeline folder, autoguided by another
pipeline's model or a training-free weak guide, optionally with CFG. A thin shell over
`wrappers.pipelines.generate_diffusers`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import UserInputError
from ..images import save_png
from ..io import atomic
from ..seeds import parse_seeds
from ..wrappers.pipelines import DiffusersSettings, generate_diffusers, load_pipeline


@click.command("generate-diffusers")
@click.option("--model", "model_path", required=True, help="Main model: a diffusers pipeline folder.")
@click.option("--guide", "guide_path", default=None, help="Guide: another pipeline folder (same latents).")
@click.option(
    "--weak-guide", default=None, help="Or a training-free guide: dropout:P, input-noise:R, skip:..."
)
@click.option("--weak-guide-seed", type=int, default=0, show_default=True)
@click.option("--guidance", type=float, default=1.0, show_default=True, help="Autoguidance weight w.")
@click.option(
    "--cfg", "cfg_guidance", type=float, default=1.0, show_default=True, help="CFG weight (null class)."
)
@click.option("--class", "class_label", type=int, default=None, help="Fixed class (default: drawn per seed).")
@click.option("--seeds", "seeds_text", default="0-7", show_default=True)
@click.option("--steps", type=int, default=32, show_default=True, help="Heun steps.")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", "out_dir", required=True)
def generate_diffusers_command(
    model_path: str,
    guide_path: str | None,
    weak_guide: str | None,
    weak_guide_seed: int,
    guidance: float,
    cfg_guidance: float,
    class_label: int | None,
    seeds_text: str,
    steps: int,
    batch: int,
    dtype: str,
    device: str,
    out_dir: str,
) -> None:
    """Generate PNGs from a diffusers model guided by the package (autoguidance and/or CFG)."""
    import torch

    seeds = parse_seeds(seeds_text)
    if steps < 1 or batch < 1:
        raise UserInputError("--steps and --batch must be >= 1")
    dev = (
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    out = atomic.check_dir(out_dir, "--out")  # before loading anything
    t0 = time.perf_counter()
    main = load_pipeline(model_path, dtype)
    guide = load_pipeline(guide_path, dtype) if guide_path else None
    settings = DiffusersSettings(seeds, guidance, cfg_guidance, class_label, steps, batch)
    images, labels = generate_diffusers(main, settings, guide, weak_guide, weak_guide_seed, dev)
    for seed, image in zip(seeds, images, strict=True):
        save_png(out / f"seed{seed:06d}.png", image)
    meta = {
        "command": "generate-diffusers",
        "model": str(Path(model_path).resolve()),
        "guide": str(Path(guide_path).resolve()) if guide_path else None,
        "weak_guide": weak_guide,
        "prediction": main.denoiser.prediction,
        "settings": {**settings.__dict__, "dtype": dtype, "device": dev},
        "labels": None if labels is None else {str(s): int(k) for s, k in zip(seeds, labels, strict=True)},
        "wall_s": time.perf_counter() - t0,
    }
    atomic.write_json(out / "generate.json", meta)
    click.echo(f"wrote {len(seeds)} images to {out}")
