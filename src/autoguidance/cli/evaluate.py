"""`autoguidance evaluate`: FID, FD_DINOv2, fd_classifier, precision/recall and class agreement of a folder
or zip of images, or of a model generating on the fly (no image files written).

A thin shell over `metrics.evaluation`, `generate.generate_batches` and `guidance.guided`. Everything the
user gives is checked before the expensive work (weights files, the reference's resolution and channels,
the output path); results go to one JSON file, written atomically, with the full configuration, counts,
timings and detector versions. Under torchrun each process evaluates its share (whole batches by seed or
file order) and rank 0 writes the result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .. import distributed
from ..errors import UserInputError, check_int
from ..generate import check_class_label, generate_batches
from ..images import as_read_back
from ..io import atomic
from ..metrics import evaluation
from ..metrics.detectors import make_detector
from ..metrics.image_sources import folder_batches, scan_folder
from ..metrics.reference import dataset_reference, load_reference, stats_file_for
from ..sampling import SamplerSettings
from ..seeds import parse_seeds
from .generate import crop
from .models import ModelOptions, load_models
from .options import device_option, model_options, progress_option, sampler_options, versions

DEFAULT_METRICS = "fd_classifier,pr_classifier,classes"


def _builtin_name(ref: str) -> str | None:
    from ..data import BUILTIN_NAMES

    name = ref.partition(":")[0]
    return name if name in BUILTIN_NAMES else None


@dataclass
class _Source:
    """The images to measure: this process's batches, their side and channels, their count, a record."""

    batches: Any
    height: int
    channels: int
    total: int
    record: dict[str, Any]


@click.command("evaluate")
@click.option("--images", "images_path", default=None, help="Folder or .zip of PNG/JPEG images to measure.")
@model_options
@click.option("--seeds", "seeds_text", default="0-499", show_default=True, help="Seeds to generate.")
@click.option("--class", "class_label", type=int, default=None, help="Generate this class only.")
@sampler_options
@click.option(
    "--ref",
    default=None,
    help="Reference: a dataset (mnist:train, digits, a folder or .zip) whose statistics are computed and "
    "cached, or a statistics file (.safetensors from this package, or an EDM2 .pkl). Needed unless "
    "--ref-stats covers every detector.",
)
@click.option(
    "--ref-stats",
    "ref_stats",
    multiple=True,
    help="A statistics file for one detector (ours: .safetensors; EDM2: .pkl), used instead of --ref for "
    "that detector. Repeatable.",
)
@click.option(
    "--metrics",
    "metrics_text",
    default=DEFAULT_METRICS,
    show_default=True,
    help=f"Comma-separated: {', '.join(evaluation.METRICS)}.",
)
@click.option(
    "--inception-weights", default=None, help="Inception-v3 TorchScript for fid; docs/evaluation.md."
)
@click.option("--dinov2-weights", default=None, help="DINOv2 folder for fd_dinov2; docs/evaluation.md.")
@click.option("--batch", type=int, default=64, show_default=True, help="Images per step over all processes.")
@device_option
@progress_option
@click.option("--out", "out_path", required=True, help="Results JSON file.")
def evaluate(
    images_path: str | None,
    models: ModelOptions,
    seeds_text: str,
    class_label: int | None,
    sampler: SamplerSettings,
    ref: str | None,
    ref_stats: tuple[str, ...],
    metrics_text: str,
    inception_weights: str | None,
    dinov2_weights: str | None,
    batch: int,
    device: str,
    progress: bool,
    out_path: str,
) -> None:
    """Measure images (a folder/zip, or a model generating on the fly) against a reference.

    \f
    (Long only by its parameter list: click passes one argument per option.)
    """
    t_start = time.perf_counter()
    _check_sources(images_path, models, seeds_text, class_label)
    metrics = evaluation.parse_metrics(metrics_text)
    check_int("--batch", batch, minimum=1)
    out = atomic.check_file(out_path, "--out")
    d = distributed.setup(device, backend="gloo")
    try:
        if batch % d.world_size:
            raise UserInputError(f"--batch {batch} is not divisible by the {d.world_size} processes")
        share, show = batch // d.world_size, progress and d.is_main
        names = evaluation.detectors_for(metrics)
        weights = {"inception_weights": inception_weights, "dinov2_weights": dinov2_weights}
        detectors = {
            n: make_detector(n, **weights, dataset=_classifier_dataset(ref), device=d.device) for n in names
        }  # weights are checked (one line) before any image is made
        if images_path is not None:
            source = _folder_source(images_path, share, d)
        else:
            source = _model_source(models, seeds_text, class_label, sampler, share, d, show)
        t_ref = time.perf_counter()
        references = _references(detectors, metrics, ref, ref_stats, source, batch, show)
        reference_s = time.perf_counter() - t_ref
        t_eval = time.perf_counter()
        n_batches = math.ceil(
            len(distributed.shard_seeds(range(source.total), d.rank, d.world_size, share)) / share
        )
        acc = evaluation.accumulate(
            source.batches, detectors, metrics, progress=show, total_batches=n_batches
        )
        acc = evaluation.reduce_accumulated(acc, source.total, share)
        eval_s = d.max(time.perf_counter() - t_eval)
        if not d.is_main:
            return
        t_metrics = time.perf_counter()
        results = evaluation.compute_metrics(acc, references, metrics)
        timings = {
            "total_s": time.perf_counter() - t_start,
            "process_cpu_s": time.process_time(),  # rank 0's CPU time: wall time on a shared CPU misleads
            "reference_s": reference_s,
            "evaluate_s": eval_s,
            "metrics_s": time.perf_counter() - t_metrics,
            "images_per_s": acc.count / eval_s if eval_s > 0 else math.inf,
            "per_stage_s": acc.seconds,
        }
        config = {"ref": ref, "ref_stats": list(ref_stats), "metrics": metrics, "batch": batch}
        config |= {"device": str(d.device), "world_size": d.world_size, "pr_k": evaluation.PR_K, **weights}
        record = _record(config, source, detectors, references, acc, results, timings)
        atomic.write_json(out, record)
        click.echo(_summary(results) + f"  ({acc.count} images; wrote {out})")
    finally:
        d.close()


def _record(config, source: _Source, detectors, references, acc, results, timings) -> dict[str, Any]:
    """The results JSON: configuration, source, detectors and references, counts, metrics, timings."""
    return {
        "command": "evaluate",
        "config": config,
        "source": source.record,
        "detectors": {n: det.describe() for n, det in detectors.items()},
        "references": {n: r.describe() for n, r in references.items()},
        "counts": {"images": acc.count, "reference": {n: r.count for n, r in references.items()}},
        "metrics": results,
        "timings": timings,
        "versions": versions(),
    }


def _check_sources(images_path, models: ModelOptions, seeds_text: str, class_label) -> None:
    """Exactly one of --images and a model, and the model's options (nothing loaded yet)."""
    model_given = models.net is not None or models.preset is not None
    if (images_path is None) == (not model_given):
        raise UserInputError(
            "give exactly one of --images (a folder or zip) and --net (a model to generate from)"
        )
    if images_path is not None:
        given = (
            models.guide,
            models.guidance,
            models.interval,
            models.weak_guide,
            models.uncond,
            class_label,
        )
        if any(v is not None for v in given):
            raise UserInputError("--guide, --guidance, --interval and --class apply to --net only")
        return
    parse_seeds(seeds_text)
    models.check()
    if models.guidance is not None and len(models.weights()) > 1:
        raise UserInputError("evaluate takes one guidance weight; run it once per weight")


def _classifier_dataset(ref: str | None) -> str | None:
    """The built-in dataset the classifier detector is trained on: --ref's, or that of a file of ours."""
    if ref is None:
        return None
    if Path(ref).suffix not in (".pkl", ".safetensors"):
        return _builtin_name(ref)
    if Path(ref).suffix != ".safetensors" or not Path(ref).is_file():
        return None
    from ..io.checkpoint import read_metadata

    return _builtin_name(str(read_metadata(ref, label="reference statistics").get("dataset", "")))


def _folder_source(images_path: str, share: int, d) -> _Source:
    info = scan_folder(images_path)
    height, width, channels = info.shape
    if height != width:
        raise UserInputError(f"images must be square: {info.files[0]!r} is {width}x{height}")
    record = {"images": str(Path(images_path).resolve()), "count": len(info.files)}
    record["labelled"] = info.labels is not None
    batches = folder_batches(images_path, info, share, d.rank, d.world_size)
    return _Source(batches, height, channels, len(info.files), record)


def _model_source(models, seeds_text, class_label, sampler, share, d, progress) -> _Source:
    """Images generated on the fly, measured as reading their PNGs back would measure them."""
    loaded = load_models(models, d.device)
    check_class_label(loaded.config.label_dim, class_label)
    seeds = parse_seeds(seeds_text)
    w, size = loaded.options.weights()[0], loaded.image_size()
    mine = distributed.shard_seeds(seeds, d.rank, d.world_size, share)
    batches = (
        (as_read_back(crop(b.images, size)), b.labels)
        for b in generate_batches(
            loaded.denoiser(w),
            mine,
            class_label=class_label,
            sampler=sampler,
            batch_size=share,
            device=d.device,
            decode=loaded.decode,
        )  # fmt: skip
    )
    provenance = loaded.provenance()
    record = {
        **{k: provenance[k] for k in ("net", "guide", "weak_guide", "uncond", "preset", "dtype")},
        "guidance": w,
        "interval": list(loaded.options.interval_range()) if loaded.options.interval else None,
        "seeds": seeds_text,
        "count": len(seeds),
        "class": class_label,
        "sampler": sampler.to_dict(),
        "evaluations_per_image": sampler.evaluations(),
    }
    return _Source(batches, size, min(loaded.image_channels(), 3), len(seeds), record)


def _references(detectors, metrics, ref, ref_stats, source: _Source, batch: int, progress: bool) -> dict:
    """Each detector's reference statistics: a statistics file, or a dataset's (computed and cached),
    checked against the measured images' resolution and channels."""
    ref_is_file = ref is not None and Path(ref).suffix in (".pkl", ".safetensors")
    references = {}
    for n, det in detectors.items():
        if not any(evaluation.METRICS[m] in ((n, "fd"), (n, "pr")) for m in metrics):
            continue  # class agreement alone needs no reference statistics
        stats_file = stats_file_for(ref_stats, n)
        if stats_file is not None:
            r = load_reference(stats_file, n)
        elif ref is None:
            raise UserInputError(f"no reference for the {n} detector: give --ref or --ref-stats")
        elif ref_is_file:
            r = load_reference(ref, n)
        else:
            r = dataset_reference(ref, det, batch=batch, progress=progress)
        if r.detector_version is not None and r.detector_version != det.version:
            raise UserInputError(
                f"reference {ref!r} was made with {r.detector_version!r}, not {det.version!r}"
            )
        r.check_images(source.height, source.channels)
        references[n] = r
    return references


def _summary(results: dict) -> str:
    parts = []
    for name, value in results.items():
        if isinstance(value, float):
            parts.append(f"{name} {value:.4g}")
        elif name == "classes":
            if value["agreement"] is not None:
                parts.append(f"class agreement {value['agreement']:.3f}")
        else:
            parts.append(f"{name}: " + " ".join(f"{k} {v:.3f}" for k, v in value.items()))
    return "; ".join(parts)
