"""Text-to-image autoguidance on a GPU: the paper's DeepFloyd IF grid (Figures 5-6: IF-I-XL guided by
IF-I-M, rows w = 1..4, columns alpha = 0 (CFG) .. 1 (autoguidance)) for one prompt, and SDXL with a LoRA
guide (main = base + LoRA, guide = the same base with the LoRA at a lower scale, sharing its weights);
images/s and peak GPU memory in fp16 and bf16.

Run by a GPU owner (local folders or hub names; weights are not downloaded by the tests):
    python benchmarks/gpu_text_to_image.py --device cuda \\
        --if-main DeepFloyd/IF-I-XL-v1.0 --if-guide DeepFloyd/IF-I-M-v1.0 --variant fp16 \\
        --sdxl stabilityai/stable-diffusion-xl-base-1.0 --sdxl-lora path/to/lora.safetensors \\
        --out bench_t2i.json --images bench_t2i_images
Smoke check on a CPU (tiny random pipelines of each family, built in memory; also the CPU seconds per
image that the docs quote):
    python benchmarks/gpu_text_to_image.py --tiny

Timing covers sampling only (the prompt is encoded once before; decoding is excluded, and so are IF's
stages II/III, which run as released). Each sampled image of the grid evaluates the main model, its
negative-prompt branch and the guide at every step where both terms are on; a w = 1 row is sampled
once. Memory is torch.cuda.max_memory_allocated over the whole configuration, loading included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoguidance.images import save_png
from autoguidance.wrappers.lora import lora_views, parameter_bytes
from autoguidance.wrappers.precision import parse_dtype
from autoguidance.wrappers.text_generate import (
    TextModels,
    TextSettings,
    generate_text,
    interpolation_grid,
)
from autoguidance.wrappers.text_pipelines import load_guide, load_text_pipeline


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def if_grid(args, dtype_name: str) -> dict:
    """IF-I-XL + IF-I-M: the Figure 5-6 grid for one prompt and seed."""
    dev, dtype = args.device, parse_dtype(dtype_name)
    reset_memory(dev)
    kw = {"dtype": dtype, "device": dev, "variant": args.variant}
    main = load_text_pipeline(args.if_main, **kw)
    guide = load_guide(args.if_guide, main, **kw)
    models = TextModels(main, main.denoiser, guide.denoiser)
    settings = TextSettings(args.prompt, [args.seed], steps=args.steps, solver="heun")
    ws, alphas = [1.0, 2.0, 3.0, 4.0], [0.0, 0.25, 0.5, 0.75, 1.0]
    interpolation_grid(models, TextSettings(args.prompt, [args.seed], steps=2), [2.0], [0.5], dev)  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    grid, _ = interpolation_grid(models, settings, ws, alphas, dev)
    sync(dev)
    seconds = time.perf_counter() - t0
    sampled = (len(ws) - (1.0 in ws)) * len(alphas) + (1.0 in ws)
    if args.images:
        save_png(Path(args.images) / f"if-grid-{dtype_name}.png", grid.labelled())
    return {
        "config": "IF stage I grid",
        "main": args.if_main,
        "guide": args.if_guide,
        "dtype": dtype_name,
        "steps": args.steps,
        "images_sampled": sampled,
        "seconds": seconds,
        "images_per_s": sampled / seconds,
        "peak_gib": peak_gib(dev),
        "weights_gib": parameter_bytes(main.network, guide.network) / 2**30,
    }


def sdxl_lora(args, dtype_name: str) -> list[dict]:
    """SDXL base + LoRA (scale 1) guided by the same base with the LoRA at --guide-lora-scale."""
    dev, dtype = args.device, parse_dtype(dtype_name)
    reset_memory(dev)
    main = load_text_pipeline(args.sdxl, dtype=dtype, device=dev, variant=args.variant)
    base_bytes = parameter_bytes(main.network)
    setup = lora_views(main, args.sdxl_lora, 1.0, guide_lora_scale=args.guide_lora_scale)
    rows = []
    seeds = list(range(args.batch))
    for name, guide, kw in (
        ("unguided", None, {}),
        ("CFG", None, {"cfg": args.cfg}),
        ("CFG + LoRA guide", setup.guide, {"cfg": args.cfg, "guidance": args.guidance}),
    ):
        models = TextModels(main, setup.main, guide)
        settings = TextSettings(args.prompt, seeds, steps=args.steps, batch_size=args.batch, **kw)
        generate_text(models, TextSettings(args.prompt, seeds[:1], steps=2, **kw), dev)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        images, _, _ = generate_text(models, settings, dev)
        sync(dev)
        seconds = time.perf_counter() - t0
        if args.images:
            save_png(Path(args.images) / f"sdxl-{name.replace(' ', '_')}-{dtype_name}.png", images[0])
        rows.append({
            "config": f"SDXL + LoRA: {name}",
            "dtype": dtype_name,
            "steps": args.steps,
            "batch": args.batch,
            "seconds": seconds,
            "images_per_s": len(seeds) / seconds,
            "peak_gib": peak_gib(dev),
            "network_gib": base_bytes / 2**30,
            "network_with_loras_gib": parameter_bytes(setup.main, setup.guide) / 2**30,
        })  # fmt: skip
    return rows


def tiny(args) -> list[dict]:
    """Every family's tiny random pipeline (as in the tests), saved to folders and timed on the CPU:
    unguided and CFG + autoguidance (a second tiny model as the guide), `--steps` Heun steps."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "wrappers"))
    import tiny_pipelines

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fam in ("if", "sd", "sdxl", "sd3"):
            tiny_pipelines.BUILDERS[fam](0).save_pretrained(f"{tmp}/{fam}")
            tiny_pipelines.BUILDERS[fam](1).save_pretrained(f"{tmp}/{fam}-guide")
            main = load_text_pipeline(f"{tmp}/{fam}")
            guide = load_guide(f"{tmp}/{fam}-guide", main)
            for name, kw in (("unguided", {}), ("CFG + autoguidance", {"cfg": 2.0, "guidance": 2.0})):
                models = TextModels(main, main.denoiser, guide.denoiser if kw else None)
                seeds = list(range(args.batch))
                settings = TextSettings("a red cat", seeds, steps=args.steps, batch_size=args.batch,
                                        max_sequence_length=8, **kw)  # fmt: skip
                generate_text(models, TextSettings("a red cat", [0], steps=2, max_sequence_length=8, **kw))
                t0 = time.perf_counter()
                generate_text(models, settings)
                seconds = time.perf_counter() - t0
                rows.append({
                    "config": f"tiny {fam}: {name}",
                    "steps": args.steps,
                    "images": len(seeds),
                    "cpu_seconds_per_image": seconds / len(seeds),
                    "threads": torch.get_num_threads(),
                })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny random pipelines of each family on the CPU")
    p.add_argument("--if-main", default=None, help="IF stage I main model (e.g. DeepFloyd/IF-I-XL-v1.0)")
    p.add_argument("--if-guide", default=None, help="IF stage I guide (e.g. DeepFloyd/IF-I-M-v1.0)")
    p.add_argument("--sdxl", default=None, help="SDXL base pipeline")
    p.add_argument("--sdxl-lora", default=None, help="a LoRA for it (main scale 1)")
    p.add_argument("--guide-lora-scale", type=float, default=0.5, help="the LoRA's scale in the guide")
    p.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--dtypes", default="fp16,bf16")
    p.add_argument("--variant", default=None, help="weights variant, e.g. fp16")
    p.add_argument("--images", default=None, help="folder for the grid and sample images")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    rows: list[dict] = []
    if args.tiny:
        torch.set_num_threads(1)
        rows += tiny(args)
    for dt in [d.strip() for d in args.dtypes.split(",") if d.strip()] if not args.tiny else []:
        if args.if_main and args.if_guide:
            rows.append(if_grid(args, dt))
        if args.sdxl and args.sdxl_lora:
            rows += sdxl_lora(args, dt)
    if not rows:
        p.error("nothing to run: give --tiny, or --if-main with --if-guide, or --sdxl with --sdxl-lora")
    for r in rows:
        print(json.dumps(r))
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
