"""`autoguidance generate`: images from a trained network, optionally guided, as PNGs or a grid.

A thin shell over `generate.generate_batches` (the one generation loop) and `guidance.guided` (the one
builder). Every PNG is written as soon as its batch is made, so memory does not grow with the number of
seeds, and a rerun of the same command into the same folder makes only the batches whose PNGs are not all
there (the batches of an uninterrupted run, so the files come out byte-identical): a killed run loses at
most one batch. The folder's configuration (generate-config.json: models by SHA-256, weights, sampler,
batch, device type) must match for that; another configuration is refused rather than mixed in. Under
torchrun each process generates its share of the seeds (`distributed.shard_seeds`, whole batches) and
writes its own PNGs; for --grid the images are gathered as tensors and rank 0 writes the grid. All input is
validated before anything is loaded or written.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click
import torch

from .. import distributed
from ..errors import UserInputError
from ..generate import check_class_label, generate_batches
from ..images import labelled_grid, save_png
from ..io import atomic
from ..sampling import SamplerSettings
from ..seeds import parse_seeds
from .grid import grid_cells, grid_labels, grid_layout
from .models import ModelOptions, Models, load_models
from .options import device_option, model_options, progress_option, sampler_options, versions

METADATA_NAME = "generate.json"
CONFIG_NAME = "generate-config.json"
GRID_NAME = "grid.png"


def seed_file(seed: int) -> str:
    return f"seed{seed:06d}.png"


def weight_dir(w: float) -> str:
    return f"w{w:g}"


def crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, R, R, C) -> the centred (N, size, size, C): undo the training data's padding."""
    if size >= images.shape[1]:
        return images
    before = (images.shape[1] - size) // 2
    return images[:, before : before + size, before : before + size]


@click.command("generate")
@model_options
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
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder (created).")
def generate(
    models: ModelOptions,
    seeds_text: str,
    class_label: int | None,
    sampler: SamplerSettings,
    batch: int,
    grid: bool,
    device: str,
    progress: bool,
    out_dir: str,
) -> None:
    """Generate images (one PNG per seed, or a grid) with optional autoguidance."""
    t_start = time.perf_counter()
    seeds = parse_seeds(seeds_text)
    models.check()
    out = atomic.check_dir(out_dir, "--out")  # before loading networks or sampling
    # gloo even on GPUs: ranks exchange only a few uint8 images and timings, as CPU tensors.
    d = distributed.setup(device, backend="gloo")
    try:
        if batch % d.world_size:
            raise UserInputError(f"--batch {batch} is not divisible by the {d.world_size} processes")
        loaded = load_models(models, d.device)
        check_class_label(loaded.config.label_dim, class_label)
        run = _Run(loaded, seeds, class_label, sampler, batch // d.world_size, d, progress and d.is_main)
        claim_folder(out, run.configuration(grid), d)
        t_loaded = time.perf_counter()
        outputs = run.grid(out) if grid else run.pngs(out)
        gen_s = d.max(time.perf_counter() - t_loaded)  # the slowest process sets the wall time
        written = int(d.sum(run.written))  # (collectives: every rank takes part)
        d.barrier()  # every rank's PNGs are on disk before rank 0 describes them
        if d.is_main:
            timings = {"load_s": t_loaded - t_start, "generate_s": gen_s}
            atomic.write_json(out / METADATA_NAME, run.record(seeds_text, grid, outputs, timings))
            if grid:
                click.echo(f"wrote {run.count} images to {out} ({GRID_NAME})")
            else:
                already = f" ({run.count - written} were there already)" if written < run.count else ""
                click.echo(f"wrote {written} images to {out}{already}")
    finally:
        d.close()


def claim_folder(out: Path, configuration: dict[str, Any], d) -> None:
    """Record the run's configuration in the output folder, or check it against the one recorded there:
    a folder holds the images of one configuration only."""
    path = out / CONFIG_NAME
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise UserInputError(f"--out {out}: {CONFIG_NAME} is unreadable; choose another folder") from None
        differ = sorted(k for k in {*recorded, *configuration} if recorded.get(k) != configuration.get(k))
        if differ:
            raise UserInputError(
                f"--out {out} holds the images of another configuration ({', '.join(differ)} differ): "
                "choose another folder"
            )
    elif out.is_dir() and any(out.rglob("seed*.png")):
        raise UserInputError(f"--out {out} holds images of an unknown configuration: choose another folder")
    d.barrier()  # every rank has read the folder before rank 0 writes into it
    if d.is_main:
        atomic.write_json(path, configuration)


class _Run:
    """One generate run: its models and settings, this process's share of the seeds, what it wrote."""

    def __init__(self, models: Models, seeds, class_label, sampler, share, d, progress):
        self.models, self.seeds, self.class_label, self.sampler = models, seeds, class_label, sampler
        self.share, self.d, self.progress = share, d, progress
        self.weights = models.options.weights()
        self.mine = distributed.shard_seeds(seeds, d.rank, d.world_size, share)
        self.size = models.image_size()
        self.labels: dict[str, int] = {}
        self.layout: dict | None = None
        self.count = self.written = 0  # images in all; PNGs this process wrote (a rerun skips the rest)

    def configuration(self, grid: bool) -> dict[str, Any]:
        """Everything that decides the images' pixels, for `claim_folder` (not the seeds: more seeds may
        join a folder; not the number of processes: batches are dealt out whole)."""
        o, p = self.models.options, self.models.provenance()
        models = {k: p[k]["sha256"] if p[k] else None for k in ("net", "guide", "uncond")}
        return {
            "models": {**models, "weak_guide": p["weak_guide"], "dtype": o.dtype, "vae": o.vae},
            "guidance": self.weights,
            "interval": o.interval,
            "uncond_guidance": o.uncond_guidance,
            "class": self.class_label,
            "sampler": self.sampler.to_dict(),
            "batch": self.share * self.d.world_size,
            "device": self.d.device.type,
            "grid": grid,
        }

    def batches(self, w: float, row_class: int | None, skip=None):
        """This process's batches at weight w, cropped to the training images' size (images None for the
        batches `skip` leaves out)."""
        for b in generate_batches(
            self.models.denoiser(w),
            self.mine,
            class_label=row_class,
            sampler=self.sampler,
            batch_size=self.share,
            device=self.d.device,
            decode=self.models.decode,
            progress=self.progress,
            skip=skip,
        ):
            yield b.seeds, None if b.images is None else crop(b.images, self.size), b.labels

    def pngs(self, out: Path) -> list[str]:
        """One PNG per seed (in a folder per weight when there are several), each written as soon as
        its batch is made."""
        outputs: list[str] = []
        for w in self.weights:
            sub = out / weight_dir(w) if len(self.weights) > 1 else out

            def written(seeds: list[int], sub: Path = sub) -> bool:  # atomic writes: a file is whole
                return all((sub / seed_file(s)).exists() for s in seeds)

            for seeds, images, labels in self.batches(w, self.class_label, skip=written):
                for i, seed in enumerate(seeds if images is not None else []):
                    if not (sub / seed_file(seed)).exists():  # files of an earlier run stay untouched
                        save_png(sub / seed_file(seed), images[i])
                        self.written += 1
                if labels is not None:  # the same for every w: drawn per seed
                    self.labels.update({str(s): int(k) for s, k in zip(seeds, labels, strict=True)})
            outputs += [str((sub / seed_file(s)).relative_to(out)) for s in self.seeds]
        self.labels = self._gathered_labels()
        self.count = len(self.seeds) * len(self.weights)
        return outputs

    def _gathered_labels(self) -> dict[str, int]:
        if self.models.config.label_dim == 0:
            return {}
        mine = torch.tensor([self.labels[str(s)] for s in self.mine], dtype=torch.int64)
        everyone = distributed.gather_sharded(mine, len(self.seeds), self.share)
        return {str(s): int(k) for s, k in zip(self.seeds, everyone, strict=True)}

    def grid(self, out: Path) -> list[str]:
        """One labelled grid.png: rows of classes or seeds, columns of weights and seeds."""
        self.layout = grid_layout(self.models.config.label_dim, self.seeds, self.weights, self.class_label)
        rows = self.layout["row_values"] if self.layout["rows"] == "class" else [self.class_label]
        cells = {}
        for row_class in rows:
            for w in self.weights:
                images = torch.cat([images for _, images, _ in self.batches(w, row_class)])
                cells[(row_class, w)] = distributed.gather_sharded(images, len(self.seeds), self.share)
        self.count = len(self.seeds) * len(self.weights) * len(rows)
        if self.d.is_main:
            rows_text, cols_text = grid_labels(self.layout, self.size)
            grid = labelled_grid(grid_cells(cells, self.layout, self.weights), rows_text, cols_text)
            save_png(out / GRID_NAME, grid)
        return [GRID_NAME]

    def record(self, seeds_text: str, grid: bool, outputs: list[str], timings: dict) -> dict[str, Any]:
        """generate.json: every setting, where each model came from, what was written, and timings."""
        o = self.models.options
        settings = {
            "seeds": seeds_text,
            "num_seeds": len(self.seeds),
            "guidance": self.weights,
            "interval": list(o.interval_range()) if o.interval else None,
            "class": self.class_label,
            "sampler": self.sampler.to_dict(),
            "evaluations_per_image": self.sampler.evaluations(),
            "image_size": self.size,
            "batch": self.share * self.d.world_size,
            "device": str(self.d.device),
            "world_size": self.d.world_size,
            "grid": grid,
        }
        gen_s = timings["generate_s"]
        per_s = self.count / gen_s if gen_s > 0 else math.inf
        return {
            "command": "generate",
            "settings": settings,
            **self.models.provenance(),
            "grid_layout": self.layout,
            "outputs": outputs,
            "labels": self.labels or None,
            "timings": {**timings, "images": self.count, "images_per_s": per_s},
            "versions": versions(),
        }
