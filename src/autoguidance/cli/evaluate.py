"""`autoguidance evaluate`: FID, FD_DINOv2, fd_classifier, precision/recall and class agreement of a folder
or zip of images, or of a model generating on the fly (no image files written).

A thin shell over `metrics.evaluation`. Everything the user gives is checked before the expensive work
(weights files, the reference's resolution and channels, the output path); results go to one JSON file,
written atomically, with the full configuration, counts, timings and detector versions. Under torchrun
each process evaluates its share (whole batches by seed or file order) and rank 0 writes the result.
"""

from __future__ import annotations

import math
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import click
import torch

from .. import distributed
from ..errors import UserInputError, check_int
from ..generate import check_class_label, generate_images, guided_denoiser, shard_seeds
from ..images import as_read_back, check_png_channels
from ..io import atomic
from ..io.loading import edm2_decoder, load_any_network
from ..metrics import evaluation
from ..metrics.detectors import make_detector
from ..metrics.image_sources import folder_batches, scan_folder
from ..metrics.reference import dataset_reference, load_reference, stats_file_for
from ..seeds import parse_seeds
from . import models as interop
from .generate import _provenance, parse_interval, parse_weights
from .options import SamplerSettings, device_option, model_source_options, progress_option, sampler_options

DEFAULT_METRICS = "fd_classifier,pr_classifier,classes"


def _check_out(out: str) -> Path:
    p = Path(out)
    if p.exists() and p.is_dir():
        raise UserInputError(f"--out {out!r} is a directory; give a .json file path")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserInputError(f"cannot write {out!r}: {str(parent)!r} is not a directory")
    return p


def _builtin_name(ref: str) -> str | None:
    from ..data import BUILTIN_NAMES

    name = ref.partition(":")[0]
    return name if name in BUILTIN_NAMES else None


@click.command("evaluate")
@click.option("--images", "images_path", default=None, help="Folder or .zip of PNG/JPEG images to measure.")
@click.option("--net", "net_path", default=None, help="Or: a main network (.safetensors) to generate from.")
@click.option(
    "--guide", "guide_path", default=None, help="Guide network (autoguidance, or CFG if unconditional)."
)
@click.option("--guidance", "guidance_text", default=None, help="Guidance weight W (needs --guide).")
@click.option("--interval", "interval_text", default=None, help="LO,HI: guide only for LO < sigma <= HI.")
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
@click.option("--inception-weights", default=None, help="TorchScript Inception-v3 file for fid (see README).")
@click.option(
    "--dinov2-weights", default=None, help="Hugging Face DINOv2 directory for fd_dinov2 (see README)."
)
@click.option("--batch", type=int, default=64, show_default=True, help="Images per step over all processes.")
@device_option
@progress_option
@model_source_options
@click.option("--out", "out_path", required=True, help="Results JSON file.")
def evaluate(
    images_path: str | None,
    net_path: str | None,
    guide_path: str | None,
    guidance_text: str | None,
    interval_text: str | None,
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
    preset: str | None,
    weak_guide_spec: str | None,
    weak_guide_seed: int,
    dtype: str,
    vae: str | None,
    out_path: str,
) -> None:
    """Measure images (a folder/zip, or a model generating on the fly) against a reference."""
    t_start = time.perf_counter()
    # --- validate everything cheap first ---------------------------------------------------------------
    if preset is not None or weak_guide_spec is not None:  # models from elsewhere (interop)
        interop.check_options(preset, net_path, guide_path, weak_guide_spec, dtype)
        net_path, guide_path, guidance_text, _ = interop.apply_preset(
            preset, net_path, guide_path, guidance_text
        )
    if (images_path is None) == (net_path is None):
        raise UserInputError(
            "give exactly one of --images (a folder or zip) and --net (a model to generate from)"
        )
    if images_path is not None and any(
        v is not None for v in (guide_path, guidance_text, interval_text, class_label)
    ):
        raise UserInputError("--guide, --guidance, --interval and --class apply to --net only")
    metrics = evaluation.parse_metrics(metrics_text)
    check_int("--batch", batch, minimum=1)
    out = _check_out(out_path)
    ref_is_file = ref is not None and Path(ref).suffix in (".pkl", ".safetensors")
    builtin = None if ref is None or ref_is_file else _builtin_name(ref)
    w, interval = 1.0, None
    if net_path is not None:
        seeds = parse_seeds(seeds_text)
        w = parse_weights(guidance_text)[0] if guidance_text is not None else 1.0
        if guidance_text is not None and "," in guidance_text:
            raise UserInputError("evaluate takes one guidance weight; run it once per weight")
        interval = parse_interval(interval_text) if interval_text is not None else None
        if (guide_path is not None or weak_guide_spec is not None) and guidance_text is None:
            raise UserInputError("--guide needs --guidance W (for example 2.0; 1 = no guidance)")
    d = distributed.setup(device, backend="gloo")
    try:
        dev = d.device
        if batch % d.world_size:
            raise UserInputError(f"--batch {batch} is not divisible by the {d.world_size} processes")
        share = batch // d.world_size  # each process's images per step
        show = progress and d.is_main
        # --- detectors: weights are checked (one line) before any image is made -----------------------
        det_names = evaluation.detectors_for(metrics)
        dataset_for_classifier = _dataset_of_file(ref) if ref_is_file else builtin
        detectors = {
            n: make_detector(
                n,
                inception_weights=inception_weights,
                dinov2_weights=dinov2_weights,
                dataset=dataset_for_classifier,
                device=dev,
            )
            for n in det_names
        }
        # --- the images: their shape and count, and how to make this process's batches ---------------
        source: dict
        if images_path is not None:
            info = scan_folder(images_path)
            height, width, channels = info.shape
            if height != width:
                raise UserInputError(f"images must be square: {info.files[0]!r} is {width}x{height}")
            total = len(info.files)
            batches = folder_batches(images_path, info, share, d.rank, d.world_size)
            source = {
                "images": str(Path(images_path).resolve()),
                "count": total,
                "labelled": info.labels is not None,
            }
        else:
            net, net_meta = load_any_network(net_path, device=dev)
            guide, guide_meta = load_any_network(guide_path, device=dev) if guide_path else (None, None)
            guide = guide or interop.derive_guide(net, weak_guide_spec, weak_guide_seed)
            net, guide = interop.with_dtype(net, dtype), interop.with_dtype(guide, dtype)
            decode = edm2_decoder(net_meta, vae, dev)
            check_class_label(net, class_label)
            guided_denoiser(net, guide, w, interval)  # checks guide, w and interval together
            height, channels = net.config.img_resolution, net.config.img_channels
            if decode is not None:  # latent networks: the Stability VAE decodes 8x larger RGB images
                height, channels = 8 * height, 3
            check_png_channels(channels)
            channels = min(channels, 3)  # RGBA is measured as RGB (`as_read_back`)
            total = len(seeds)
            mine = shard_seeds(seeds, d.rank, d.world_size, share)

            def generated():
                for start in range(0, len(mine), share):
                    images, labels = generate_images(
                        net,
                        mine[start : start + share],
                        guide=guide,
                        guidance=w,
                        interval=interval,
                        class_label=class_label,
                        **sampler.generate_kwargs(),
                        batch_size=share,
                        decode=decode,
                    )
                    yield as_read_back(images), labels

            batches = generated()
            source = {
                "net": _provenance(net_path, net_meta),
                "guide": _provenance(guide_path, guide_meta) if guide_path else None,
                "weak_guide": {"spec": weak_guide_spec, "seed": weak_guide_seed} if weak_guide_spec else None,
                "preset": preset,
                "dtype": dtype,
                "guidance": w,
                "interval": list(interval) if interval else None,
                "seeds": seeds_text,
                "count": total,
                "class": class_label,
                "sampler": sampler.to_dict(),
                "evaluations_per_image": sampler.evaluations(),
            }
        # --- references: loaded or computed (and cached), checked against the images -----------------
        t_ref = time.perf_counter()
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
                r = dataset_reference(ref, det, batch=batch, progress=show)
            if r.detector_version is not None and r.detector_version != det.version:
                raise UserInputError(
                    f"reference {ref!r} was made with {r.detector_version!r}, not {det.version!r}"
                )
            r.check_images(height, channels)
            references[n] = r
        reference_s = time.perf_counter() - t_ref
        # --- the pass over the images, then the reduction across processes ---------------------------
        t_eval = time.perf_counter()
        n_batches = math.ceil(len(shard_seeds(range(total), d.rank, d.world_size, share)) / share)
        acc = evaluation.accumulate(batches, detectors, metrics, progress=show, total_batches=n_batches)
        acc = evaluation.reduce_accumulated(acc, total, share)
        eval_s = d.max(time.perf_counter() - t_eval)
        if not d.is_main:
            return
        t_metrics = time.perf_counter()
        results = evaluation.compute_metrics(acc, references, metrics)
        metrics_s = time.perf_counter() - t_metrics
        record = {
            "command": "evaluate",
            "config": {
                "ref": ref,
                "ref_stats": list(ref_stats),
                "metrics": metrics,
                "batch": batch,
                "device": str(dev),
                "world_size": d.world_size,
                "pr_k": evaluation.PR_K,
                "inception_weights": inception_weights,
                "dinov2_weights": dinov2_weights,
            },
            "source": source,
            "detectors": {n: det.describe() for n, det in detectors.items()},
            "references": {n: r.describe() for n, r in references.items()},
            "counts": {"images": acc.count, "reference": {n: r.count for n, r in references.items()}},
            "metrics": results,
            "timings": {
                "total_s": time.perf_counter() - t_start,
                "process_cpu_s": time.process_time(),  # rank 0's CPU time: wall time on a shared CPU misleads
                "reference_s": reference_s,
                "evaluate_s": eval_s,
                "metrics_s": metrics_s,
                "images_per_s": acc.count / eval_s if eval_s > 0 else math.inf,
                "per_stage_s": acc.seconds,
            },
            "versions": {"autoguidance": _version(), "torch": torch.__version__},
        }
        atomic.write_json(out, record)
        click.echo(_summary(results) + f"  ({acc.count} images; wrote {out})")
    finally:
        d.close()


def _dataset_of_file(ref: str) -> str | None:
    """The built-in dataset a reference file of ours was made from ('mnist' for 'mnist:train'), if any."""
    if Path(ref).suffix != ".safetensors" or not Path(ref).is_file():
        return None
    from ..io.checkpoint import read_metadata

    return _builtin_name(str(read_metadata(ref, label="reference statistics").get("dataset", "")))


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


def _version() -> str:
    try:
        return importlib_metadata.version("autoguidance")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
