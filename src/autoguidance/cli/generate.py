"""`autoguidance generate`: images from a trained network, optionally autoguided, as PNGs or a grid.

A thin shell over `generation.generate_images`. Under torchrun each process generates its share of the
seeds (`generation.shard_seeds`, whole batches) and writes its own PNGs; for --grid the images are
gathered as tensors and rank 0 writes the grid. All input is validated before anything is written.
"""

from __future__ import annotations

import hashlib
import math
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import click
import torch

from .. import distributed
from ..errors import UserInputError
from ..generate import check_class_label, gather_sharded, generate_images, guided_denoiser, shard_seeds
from ..guidance import check_interval, check_weight
from ..images import check_png_channels, labelled_grid, save_png
from ..io import atomic
from ..io.loading import edm2_decoder, load_any_network
from ..nets.precond import EDM2Denoiser
from ..seeds import parse_seeds
from . import models as interop
from .options import SamplerSettings, device_option, model_source_options, progress_option, sampler_options

METADATA_NAME = "generate.json"
GRID_NAME = "grid.png"


def parse_weights(text: str) -> list[float]:
    """'2' or '1,1.5,2.1' -> guidance weights; UserInputError for non-numbers, NaN or negatives."""
    weights = []
    for part in text.split(","):
        try:
            w = float(part.strip())
        except ValueError:
            raise UserInputError(f"bad guidance weight {part.strip()!r}: expected a number") from None
        weights.append(check_weight(w))
    return weights


def parse_interval(text: str) -> tuple[float, float]:
    """'LO,HI' -> (lo, hi), the sigma interval (lo, hi] where the guide is used."""
    parts = text.split(",")
    try:
        lo, hi = (float(p.strip()) for p in parts)
    except ValueError:
        raise UserInputError(f"bad guidance interval {text!r}: expected LO,HI (two numbers)") from None
    checked = check_interval((lo, hi))
    assert checked is not None
    return checked


def seed_file(seed: int) -> str:
    return f"seed{seed:06d}.png"


def weight_dir(w: float) -> str:
    return f"w{w:g}"


def _provenance(path: str, meta: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"path": str(Path(path).resolve()), "sha256": digest, "metadata": meta}


def _grid_layout(net: EDM2Denoiser, seeds: list[int], weights: list[float], class_label: int | None) -> dict:
    """Rows and columns of the grid (the paper's Figure 4 layout), as plain data for the metadata.

    Conditional net without --class: a row per class, columns = weights x seeds (weight-major).
    Otherwise a single class (or none): rows = seeds and columns = weights when several weights, else
    one row with a column per seed.
    """
    label_dim = net.config.label_dim
    if label_dim > 0 and class_label is None:
        return {
            "rows": "class",
            "row_values": list(range(label_dim)),
            "columns": "weight x seed",
            "column_values": [[w, s] for w in weights for s in seeds],
        }
    if len(weights) > 1:
        return {"rows": "seed", "row_values": seeds, "columns": "weight", "column_values": weights}
    return {"rows": "-", "row_values": [None], "columns": "seed", "column_values": seeds}


@click.command("generate")
@click.option(
    "--net",
    "net_path",
    default=None,
    help="Main network: a checkpoint (.safetensors) or an EDM2 pickle (read without running its code).",
)
@click.option(
    "--guide",
    "guide_path",
    default=None,
    help="Checkpoint of the guide: a weaker model of the same task (autoguidance), or an "
    "unconditional one for a conditional net (CFG).",
)
@click.option(
    "--guidance",
    "guidance_text",
    default=None,
    help="Guidance weight W, or W1,W2,... (needs --guide; 1 = no guidance).",
)
@click.option(
    "--interval", "interval_text", default=None, help="LO,HI: use the guide only for LO < sigma <= HI."
)
@click.option("--seeds", "seeds_text", default="0-63", show_default=True, help="Seeds, e.g. 0-63 or 0-3,10.")
@click.option(
    "--class",
    "class_label",
    type=int,
    default=None,
    help="Generate this class only (conditional nets); default: a class drawn per seed.",
)
@sampler_options
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Images per sampling step, over all processes (each of N processes takes batch / N).",
)
@click.option(
    "--grid",
    is_flag=True,
    help="Write one labelled grid.png instead of per-seed PNGs: rows = classes (conditional nets), "
    "columns = guidance weights x seeds; for one class, rows = seeds and columns = weights.",
)
@device_option
@progress_option
@model_source_options
@click.option(
    "--uncond",
    "uncond_path",
    default=None,
    help="An unconditional network for an extra CFG term beside --guide (autoguidance + CFG).",
)
@click.option("--uncond-guidance", type=float, default=1.0, show_default=True, help="Weight of the CFG term.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder (created).")
def generate(
    net_path: str,
    guide_path: str | None,
    guidance_text: str | None,
    interval_text: str | None,
    seeds_text: str,
    class_label: int | None,
    sampler: SamplerSettings,
    batch: int,
    grid: bool,
    device: str,
    progress: bool,
    preset: str | None,
    weak_guide_spec: str | None,
    weak_guide_seed: int,
    uncond_path: str | None,
    uncond_guidance: float,
    dtype: str,
    vae: str | None,
    out_dir: str,
) -> None:
    """Generate images (one PNG per seed, or a grid) with optional autoguidance."""
    t_start = time.perf_counter()
    # --- validate everything before writing anything ------------------------------------------------
    seeds = parse_seeds(seeds_text)
    interop.check_options(preset, net_path, guide_path, weak_guide_spec, dtype, uncond_path, uncond_guidance)
    net_path, guide_path, guidance_text, preset_record = interop.apply_preset(
        preset, net_path, guide_path, guidance_text
    )
    has_guide = guide_path is not None or weak_guide_spec is not None
    weights = parse_weights(guidance_text) if guidance_text is not None else [1.0]
    if not has_guide and any(w != 1.0 for w in weights):
        raise UserInputError("--guidance needs --guide (the network to guide with)")
    if has_guide and guidance_text is None:
        raise UserInputError("--guide needs --guidance W (for example 2.0; 1 = no guidance)")
    interval = parse_interval(interval_text) if interval_text is not None else None
    if interval is not None and not has_guide:
        raise UserInputError("--interval needs --guide")
    out = atomic.check_dir(out_dir, "--out")  # before loading networks or sampling
    # gloo even on GPUs: ranks exchange only a few uint8 images and timings, as CPU tensors.
    d = distributed.setup(device, backend="gloo")
    try:
        if batch % d.world_size:
            raise UserInputError(f"--batch {batch} is not divisible by the {d.world_size} processes")
        share = batch // d.world_size  # each process's images per step
        dev = d.device
        net, net_meta = load_any_network(net_path, device=dev)
        guide, guide_meta = load_any_network(guide_path, device=dev) if guide_path else (None, None)
        guide = guide or interop.derive_guide(net, weak_guide_spec, weak_guide_seed)
        uncond, uncond_meta = load_any_network(uncond_path, device=dev) if uncond_path else (None, None)
        net, guide, uncond = (interop.with_dtype(m, dtype) for m in (net, guide, uncond))
        decode = edm2_decoder(net_meta, vae, dev)
        if decode is None:
            check_png_channels(net.config.img_channels)
        check_class_label(net, class_label)
        for w in weights:  # checks the guides against the net, the weights and the interval
            guided_denoiser(net, guide, w, interval, uncond, uncond_guidance)
        t_loaded = time.perf_counter()

        # --- generate: this process's share of the seeds ---------------------------------------------
        mine = shard_seeds(seeds, d.rank, d.world_size, share)
        kwargs = dict(
            guide=guide,
            interval=interval,
            **sampler.generate_kwargs(),
            batch_size=share,
            progress=d.is_main and progress,
            uncond=uncond,
            uncond_guidance=uncond_guidance,
            decode=decode,
        )
        # Pixel networks may be trained on padded images (crop back); latent ones decode to their own size.
        size = _image_size(net_meta, net.config.img_resolution) if decode is None else None
        layout = _grid_layout(net, seeds, weights, class_label) if grid else None
        outputs: list[str] = []
        labels_by_seed: dict[str, int] = {}
        cells: dict[tuple[int | None, float], torch.Tensor] = {}
        rows = layout["row_values"] if layout and layout["rows"] == "class" else [class_label]
        for row_class in rows:
            for w in weights:
                images, labels = generate_images(net, mine, guidance=w, class_label=row_class, **kwargs)
                images = _crop(images, size) if size else images
                size = images.shape[1]
                if grid:
                    cells[(row_class, w)] = gather_sharded(images, len(seeds), share)
                    continue
                sub = out / weight_dir(w) if len(weights) > 1 else out
                for seed, image in zip(mine, images, strict=True):
                    save_png(sub / seed_file(seed), image)
                outputs += [str((sub / seed_file(s)).relative_to(out)) for s in seeds]
                if labels is not None and not labels_by_seed:  # the same for every w: drawn per seed
                    everyone = gather_sharded(labels, len(seeds), share)
                    labels_by_seed = {str(s): int(k) for s, k in zip(seeds, everyone, strict=True)}
        gen_s = d.max(time.perf_counter() - t_loaded)  # the slowest process sets the wall time
        d.barrier()  # every rank's PNGs are on disk before rank 0 describes them
        if not d.is_main:
            return
        if grid:
            rows_text, cols_text = _grid_labels(layout, size)
            save_png(
                out / GRID_NAME, labelled_grid(_grid_cells(cells, layout, weights), rows_text, cols_text)
            )
            outputs = [GRID_NAME]
        n_images = len(seeds) * len(weights) * len(rows)
        meta = {
            "command": "generate",
            "settings": {
                "seeds": seeds_text,
                "num_seeds": len(seeds),
                "guidance": weights,
                "interval": list(interval) if interval else None,
                "class": class_label,
                "sampler": sampler.to_dict(),
                "evaluations_per_image": sampler.evaluations(),
                "image_size": size,
                "batch": batch,
                "device": str(dev),
                "world_size": d.world_size,
                "grid": grid,
            },
            "net": _provenance(net_path, net_meta),
            "guide": _provenance(guide_path, guide_meta) if guide_path else None,
            "weak_guide": {"spec": weak_guide_spec, "seed": weak_guide_seed} if weak_guide_spec else None,
            "uncond": _provenance(uncond_path, uncond_meta) if uncond_path else None,
            "uncond_guidance": uncond_guidance if uncond_path else None,
            "preset": preset_record,
            "dtype": dtype,
            "grid_layout": layout,
            "outputs": outputs,
            "labels": labels_by_seed or None,
            "timings": {
                "load_s": t_loaded - t_start,
                "generate_s": gen_s,
                "images": n_images,
                "images_per_s": n_images / gen_s if gen_s > 0 else math.inf,
            },
            "versions": {"autoguidance": _version(), "torch": torch.__version__},
        }
        atomic.write_json(out / METADATA_NAME, meta)
        click.echo(f"wrote {n_images} images to {out}" + (f" ({GRID_NAME})" if grid else ""))
    finally:
        d.close()


def _grid_cells(
    cells: dict[tuple[int | None, float], torch.Tensor], layout: dict, weights: list[float]
) -> torch.Tensor:
    """Arrange gathered images {(class, w): (S, H, W, C)} as (rows, cols, H, W, C) for `layout`."""
    if layout["rows"] == "class":
        # Row k: weight-major columns, the seeds of each weight side by side.
        return torch.stack([torch.cat([cells[(k, w)] for w in weights]) for k in layout["row_values"]])
    (row_class,) = {k for k, _ in cells}
    per_weight = torch.stack([cells[(row_class, w)] for w in weights], dim=1)  # (S, W, H, W, C)
    if layout["rows"] == "seed":
        return per_weight
    return per_weight[:, 0][None]  # one row, a column per seed


def _image_size(meta: dict[str, Any], resolution: int) -> int:
    """The training images' side before padding (train pads e.g. 28 to 32); the net's side if unknown."""
    size = meta.get("image_size")
    return size if isinstance(size, int) and 0 < size <= resolution else resolution


def _crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, R, R, C) -> the centred (N, size, size, C): undo the training data's padding."""
    before = (images.shape[1] - size) // 2
    return images[:, before : before + size, before : before + size]


def _grid_labels(layout: dict, cell_width: int) -> tuple[list[str], list[list[str]]]:
    """Row labels and column header lines of the grid, from its layout (`_grid_layout`). Over cells
    narrower than "seed 10" in the default font (about 42 pixels) seeds are written s10."""
    seed = "seed {}" if cell_width >= 42 else "s{}"
    rows = [f"class {v}" if layout["rows"] == "class" else f"seed {v}" for v in layout["row_values"]]
    if layout["rows"] == "-":
        rows = [""]
    if layout["columns"] == "weight x seed":
        cols = [[f"w={w:g}", seed.format(s)] for w, s in layout["column_values"]]
    elif layout["columns"] == "weight":
        cols = [[f"w={w:g}"] for w in layout["column_values"]]
    else:
        cols = [[seed.format(s)] for s in layout["column_values"]]
    return rows, cols


def _version() -> str:
    try:
        return importlib_metadata.version("autoguidance")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
