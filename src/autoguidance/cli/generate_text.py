"""`autoguidance generate-text`: text-to-image with autoguidance and/or CFG (DeepFloyd IF stage I,
Stable Diffusion 1.5 / 2, SDXL, SD3), and the paper's Figure 5-6 grid. A thin shell over `wrappers`.

The guide is one of: another model of the family (--guide: a pipeline or network folder, e.g. IF-I-M
for IF-I-XL, an earlier checkpoint), a LoRA configuration of the main network (--guide-lora and/or
--guide-lora-scale; the base weights are shared), or a training-free degradation (--weak-guide).
Every input is checked, and every model loaded, before sampling starts; images and the JSON of settings
are written only after all sampling.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..distributed import resolve_device
from ..errors import UserInputError
from ..guidance import check_guide
from ..images import save_png
from ..io import atomic
from ..seeds import parse_seeds
from .models import parse_interval
from .options import device_option, renamed_fields, versions

# The library's field names, as the flags that set them (messages name what the user typed).
FLAGS = {
    "steps": "--steps",
    "sigma_min": "--sigma-min",
    "sigma_max": "--sigma-max",
    "max_sequence_length": "--max-sequence-length",
    "batch_size": "--batch",
    "guidance weight": "--guidance",
    "CFG weight": "--cfg",
}


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserInputError(f"{flag}: expected comma-separated numbers, got {text!r}")
    return values


@click.command("generate-text")
@click.option("--model", "model_path", required=True, help="Main model: a pipeline folder or hub name.")
@click.option("--prompt", required=True, help="The text prompt.")
@click.option(
    "--negative-prompt", default=None, help="CFG's unconditional branch (default: the empty prompt)."
)
@click.option("--guide", "guide_path", default=None, help="Guide: another model of the family (folder).")
@click.option("--lora", default=None, help="The main model's LoRA (file or folder): main = base + LoRA.")
@click.option("--lora-scale", type=float, default=1.0, show_default=True, help="Scale of --lora.")
@click.option("--guide-lora", default=None, help="Guide = base + this LoRA (e.g. an earlier one).")
@click.option(
    "--guide-lora-scale",
    type=float,
    default=None,
    help="Scale of --guide-lora, or of --lora in the guide (0: base).",
)
@click.option(
    "--weak-guide", default=None, help="Training-free guide: skip:BLOCK+..., attention:TAU[:NAMES], ..."
)
@click.option("--weak-guide-seed", type=int, default=0, show_default=True)
@click.option(
    "--guidance",
    type=float,
    default=1.0,
    show_default=True,
    help="Autoguidance weight (with --alpha: total w).",
)
@click.option("--cfg", type=float, default=1.0, show_default=True, help="Classifier-free guidance weight.")
@click.option(
    "--alpha", type=float, default=None, help="Interpolate CFG (0) .. autoguidance (1) at w = --guidance."
)
@click.option("--interval", "interval_text", default=None, help="LO,HI: guide only for LO < sigma <= HI.")
@click.option("--grid", is_flag=True, help="The Figure 5-6 grid (rows w, columns alpha) for one seed.")
@click.option("--grid-w", default="1,2,3,4", show_default=True, help="The grid's weights w.")
@click.option("--grid-alpha", default="0,0.25,0.5,0.75,1", show_default=True, help="The grid's alphas.")
@click.option("--seeds", "seeds_text", default="0-3", show_default=True)
@click.option("--steps", type=int, default=32, show_default=True)
@click.option("--solver", type=click.Choice(["heun", "euler"]), default="heun", show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["edm", "scheduler"]),
    default="edm",
    show_default=True,
    help="edm: EDM's sigmas over the model's range; scheduler: the pipeline scheduler's own steps.",
)
@click.option(
    "--sigma-min", type=float, default=None, help="edm schedule: lowest sigma (default: the model's)."
)
@click.option(
    "--sigma-max", type=float, default=None, help="edm schedule: highest sigma (default: min(model, 80))."
)
@click.option("--height", type=int, default=None, help="Image height in pixels (default: the model's).")
@click.option("--width", type=int, default=None, help="Image width in pixels (default: the model's).")
@click.option(
    "--threshold/--no-threshold", default=None, help="Clip x0 as the scheduler says (default: IF yes)."
)
@click.option("--max-sequence-length", type=int, default=256, show_default=True, help="SD3's T5 tokens.")
@click.option("--stage2", default=None, help="IF: stage II pipeline folder to upscale the images.")
@click.option("--stage3", default=None, help="IF: stage III (x4 upscaler) folder, after --stage2.")
@click.option("--stage2-steps", type=int, default=None, help="Stage II's steps (default: its pipeline's).")
@click.option("--stage3-steps", type=int, default=None, help="Stage III's steps (default: its pipeline's).")
@click.option("--batch", type=int, default=4, show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--variant", default=None, help="Weights variant to load (e.g. fp16).")
@device_option
@click.option("--out", "out_dir", required=True)
def generate_text(**opts) -> None:
    """Generate PNGs from a text-to-image pipeline with autoguidance and/or CFG."""
    t0 = time.perf_counter()
    run = _plan(opts)
    models, stages = _load(run, opts)
    out = Path(opts["out_dir"])
    if opts["grid"]:
        _grid(run, models, stages, out, opts, t0)
    else:
        _images(run, models, stages, out, opts, t0)


def _plan(opts: dict):
    """Every check that needs no model: options, seeds, weights, the output folder."""
    from ..wrappers.text_generate import TextSettings, check_grid

    seeds = parse_seeds(opts["seeds_text"])
    interval = parse_interval(opts["interval_text"]) if opts["interval_text"] is not None else None
    lora_guide = opts["guide_lora"] is not None or opts["guide_lora_scale"] is not None
    sources = [s for s, given in (("--guide", opts["guide_path"]), ("--guide-lora", lora_guide),
                                   ("--weak-guide", opts["weak_guide"])) if given]  # fmt: skip
    if len(sources) > 1:
        raise UserInputError(f"give one guide, not both {' and '.join(sources)}")
    has_guide = bool(sources)
    if opts["guide_lora_scale"] is not None and opts["guide_lora"] is None and opts["lora"] is None:
        raise UserInputError("--guide-lora-scale needs --lora (the main model's LoRA) or --guide-lora")
    if opts["stage3"] and not opts["stage2"]:
        raise UserInputError("--stage3 upscales stage II's images: give --stage2 too")
    for flag in ("steps", "batch", "stage2_steps", "stage3_steps", "max_sequence_length"):
        v = opts[flag]
        if v is not None and v < 1:
            raise UserInputError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    names = ("prompt", "negative_prompt", "guidance", "cfg", "alpha", "steps", "solver", "schedule",
             "sigma_min", "sigma_max", "height", "width", "threshold", "max_sequence_length")  # fmt: skip
    settings = TextSettings(
        seeds=seeds, interval=interval, batch_size=opts["batch"], **{k: opts[k] for k in names}
    )
    with renamed_fields(FLAGS):
        settings.check()
    if opts["schedule"] == "scheduler" and (opts["sigma_min"] is not None or opts["sigma_max"] is not None):
        raise UserInputError("--sigma-min/--sigma-max set the edm schedule; --schedule scheduler has its own")
    grid = None
    if opts["grid"]:
        if opts["alpha"] is not None or opts["guidance"] != 1.0 or opts["cfg"] != 1.0:
            raise UserInputError("--grid sets w and alpha per cell: leave out --guidance, --cfg and --alpha")
        if len(seeds) != 1:
            raise UserInputError(f"--grid is for one seed (e.g. --seeds 0), got {len(seeds)}")
        if not has_guide:
            raise UserInputError("--grid interpolates CFG and autoguidance: give a guide")
        grid = check_grid(_floats(opts["grid_w"], "--grid-w"), _floats(opts["grid_alpha"], "--grid-alpha"))
    else:
        from ..wrappers.text_generate import term_weights

        _, w_ag = term_weights(settings.guidance, settings.cfg, settings.alpha)
        if w_ag != 1.0 and not has_guide:
            raise UserInputError("autoguidance (--guidance other than 1) needs a guide")
        if interval is not None and not has_guide and settings.cfg == 1.0:
            raise UserInputError("--interval needs guidance (a guide, or --cfg)")
    atomic.check_dir(opts["out_dir"], "--out")
    return {"settings": settings, "grid": grid}


def _load(run: dict, opts: dict):
    """Load the main model, its guide and the IF stages, and check the guide against the main model; all
    before any sampling."""
    from ..wrappers.lora import lora_views
    from ..wrappers.precision import parse_dtype
    from ..wrappers.text_generate import TextModels
    from ..wrappers.text_pipelines import family_of, load_text_pipeline, read_source
    from ..wrappers.upscale import load_stage

    dev = resolve_device(opts["device"])
    src = read_source(opts["model_path"])
    family = family_of(src)
    if opts["stage2"] and family.name != "if":
        raise UserInputError(f"--stage2/--stage3 upscale DeepFloyd IF's stage I; the model is {family.name}")
    if opts["guide_path"]:  # the guide's family, before any weights are read
        _check_guide_family(opts["guide_path"], family)
    kw = {"dtype": parse_dtype(opts["dtype"]), "device": dev, "variant": opts["variant"]}
    tp = load_text_pipeline(opts["model_path"], src=src, **kw)
    tp.sample_shape(opts["height"], opts["width"])  # the image size fits the network
    setup = lora_views(tp, opts["lora"], opts["lora_scale"], opts["guide_lora"], opts["guide_lora_scale"])
    main = setup.main if setup is not None else tp.denoiser
    guide, guide_record = _guide(tp, main, setup, opts, kw)
    if guide is not None:
        check_guide(main, guide, role="autoguidance")
    stages = {f: load_stage(opts[f[2:]], f, **kw) for f in ("--stage2", "--stage3") if opts[f[2:]]}
    run["device"] = str(dev)
    run["guide_record"] = guide_record
    run["lora"] = None if setup is None else {"main": setup.main.adapters.describe()}
    return TextModels(tp, main, guide), stages


def _check_guide_family(path: str, family) -> None:
    from ..wrappers.text_pipelines import family_of, read_source

    g = read_source(path, "--guide")
    if g.kind == "pipeline":
        gf = family_of(g, "--guide")
        if gf.name != family.name:
            raise UserInputError(
                f"--guide {g.where} is of family {gf.name} ({gf.pipeline}), the main model of family "
                f"{family.name} ({family.pipeline}): a guide must be of the main model's family"
            )


def _guide(tp, main, setup, opts: dict, kw: dict):
    """(the guide denoiser, its record): another model, a training-free degradation of the main model
    (named by the network's own module names), a LoRA view, or none."""
    from ..guides import weak_guide
    from ..wrappers.text_pipelines import load_guide

    if opts["guide_path"]:
        guide = load_guide(opts["guide_path"], tp, **kw).denoiser
        return guide, {"kind": "model", "source": opts["guide_path"]}
    if opts["weak_guide"]:
        seed = opts["weak_guide_seed"]
        guide = weak_guide(main, opts["weak_guide"], seed, root=tp.network)
        return guide, {"kind": "weak", "spec": opts["weak_guide"], "seed": seed}
    if setup is not None and setup.guide is not None:
        return setup.guide, {"kind": "lora", "adapters": setup.guide.adapters.describe()}
    return None, None


def _record(run: dict, models, prepared, opts: dict, t0: float, n_images: int, sample_s: float) -> dict:
    from ..wrappers.text_generate import describe

    guide_lora = {"path": opts["guide_lora"], "scale": opts["guide_lora_scale"]}
    return {
        "command": "generate-text",
        "model": opts["model_path"],
        "model_info": describe(models),
        "guide": run["guide_record"],
        "lora": {"path": opts["lora"], "scale": opts["lora_scale"], **(run["lora"] or {})}
        if opts["lora"]
        else None,
        "guide_lora": guide_lora if run["guide_record"] and run["guide_record"]["kind"] == "lora" else None,
        "stages": {"stage2": opts["stage2"], "stage3": opts["stage3"]},
        "settings": run["settings"].record(),
        "sigmas": [float(s) for s in prepared.sigmas],
        "sample_shape": list(prepared.shape),
        "x0_clip": prepared.clip.describe() if prepared.clip is not None else None,
        "dtype": opts["dtype"],
        "device": run["device"],
        "sampling_s": sample_s,
        "seconds_per_image": sample_s / max(n_images, 1),
        "wall_s": time.perf_counter() - t0,
        "versions": versions(),
    }


def _upscale(stages, samples, seeds, settings, prepared, models, opts):
    from ..wrappers.upscale import upscale

    if not stages:
        return None
    null = models.pipeline.denoiser.null_cond
    return upscale(
        samples, seeds, settings.prompt, settings.negative_prompt, prepared.cond, null, stages["--stage2"],
        stages.get("--stage3"), steps2=opts["stage2_steps"], steps3=opts["stage3_steps"],
        device=models.pipeline.network.device,
    )  # fmt: skip


def _images(run, models, stages, out: Path, opts, t0: float) -> None:
    from ..wrappers.text_generate import generate_text as generate

    settings = run["settings"]
    t1 = time.perf_counter()
    images, samples, prepared = generate(models, settings, run["device"])
    up = _upscale(stages, samples, settings.seeds, settings, prepared, models, opts)
    sample_s = time.perf_counter() - t1
    for i, seed in enumerate(settings.seeds):
        save_png(out / f"seed{seed:06d}.png", images[i])
        if up is not None:
            save_png(out / f"seed{seed:06d}-stage2.png", up.stage2[i])
            if up.stage3 is not None:
                save_png(out / f"seed{seed:06d}-stage3.png", up.stage3[i])
    meta = _record(run, models, prepared, opts, t0, len(settings.seeds), sample_s)
    atomic.write_json(out / "generate.json", meta)
    click.echo(f"wrote {len(settings.seeds)} images to {out} ({meta['seconds_per_image']:.2f} s per image)")


def _grid(run, models, stages, out: Path, opts, t0: float) -> None:
    from ..images import labelled_grid
    from ..wrappers.text_generate import interpolation_grid

    settings = run["settings"]
    ws, alphas = run["grid"]
    t1 = time.perf_counter()
    grid, prepared = interpolation_grid(models, settings, ws, alphas, run["device"])
    cells = grid.cells
    if stages:  # every cell upscaled from its own stage-I sample, with the run's seed
        r, k = grid.samples.shape[:2]
        flat = grid.samples.reshape(r * k, *grid.samples.shape[2:])
        up = _upscale(stages, flat, settings.seeds * (r * k), settings, prepared, models, opts)
        final = up.stage3 if up.stage3 is not None else up.stage2
        cells = final.reshape(r, k, *final.shape[1:])
    sample_s = time.perf_counter() - t1
    for ri, w in enumerate(ws):
        for ki, a in enumerate(alphas):
            save_png(out / f"w{w:g}-alpha{a:g}.png", cells[ri, ki])
    scale = max(1, 64 // int(cells.shape[2]))
    col = [[f"alpha={a:g}" + (" CFG" if a == 0 else " AG" if a == 1 else "")] for a in alphas]
    save_png(out / "grid.png", labelled_grid(cells, [f"w={w:g}" for w in ws], col, pad=2, scale=scale))
    meta = _record(run, models, prepared, opts, t0, len(ws) * len(alphas), sample_s)
    meta["grid"] = {
        "w": ws,
        "alpha": alphas,
        "seed": settings.seeds[0],
        "cells": {
            f"w{w:g}-alpha{a:g}.png": {
                "w": w,
                "alpha": a,
                "w_cfg": (1 - a) * (w - 1) + 1,
                "w_ag": a * (w - 1) + 1,
            }
            for w in ws
            for a in alphas
        },
        "note": "rows w, columns alpha: alpha 0 pure CFG, 1 pure autoguidance (paper Figures 5-6, App. B.3)",
    }
    atomic.write_json(out / "grid.json", meta)
    click.echo(f"wrote the {len(ws)}x{len(alphas)} grid to {out / 'grid.png'}")
