"""Measure a set of images against references: the library behind `autoguidance evaluate`.

    batches of uint8 images (this process's share) -> detectors -> streaming FeatureStats per detector
    (+ features for precision/recall, + classifier predictions) -> reduced across processes -> metrics

Metric names: `fid` (inception), `fd_dinov2` (dinov2), `fd_classifier` (classifier): Frechet distances to
the reference statistics; `pr_inception`, `pr_dinov2`, `pr_classifier`: precision, recall, density and
coverage (k = 3) against the reference features; `classes`: the classifier's class histogram of the set
and, where each image's intended class is known, the share it agrees with.

Under torchrun each process takes whole batches in turn (`distributed.shard_seeds`); the float64 sums are
added across processes, and features for precision/recall are gathered back into the original order,
so the numbers equal a single process's up to the rounding of float64 sums.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..distributed import gather_sharded
from ..errors import UserInputError
from ..progress import Progress
from .detectors import Detector
from .frechet import FeatureStats, frechet_distance_gaussians
from .precision_recall import manifold_metrics
from .reference import Reference

# metric -> (detector, kind)
METRICS: dict[str, tuple[str, str]] = {
    "fid": ("inception", "fd"),
    "fd_dinov2": ("dinov2", "fd"),
    "fd_classifier": ("classifier", "fd"),
    "pr_inception": ("inception", "pr"),
    "pr_dinov2": ("dinov2", "pr"),
    "pr_classifier": ("classifier", "pr"),
    "classes": ("classifier", "classes"),
}
PR_K = 3


def parse_metrics(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UserInputError(
            f"unknown metric {unknown[0] if unknown else text!r}: choose from {', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


def detectors_for(metrics: list[str]) -> list[str]:
    return list(dict.fromkeys(METRICS[m][0] for m in metrics))


@dataclass
class Accumulated:
    """What one pass over the images collects, per detector."""

    stats: dict[str, FeatureStats]
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    class_counts: torch.Tensor | None = None
    agree: int = 0
    labelled: int = 0
    count: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def accumulate(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    detectors: dict[str, Detector],
    metrics: list[str],
    progress: bool = False,
    total_batches: int | None = None,
) -> Accumulated:
    """One pass over (uint8 images (n, H, W, C), intended labels (n,) or None) batches."""
    keep = {METRICS[m][0] for m in metrics if METRICS[m][1] == "pr"}
    want_classes = "classes" in metrics
    acc = Accumulated(stats={n: FeatureStats(d.feature_dim) for n, d in detectors.items()})
    acc.features = {n: [] for n in keep}
    acc.seconds = {"images": 0.0, **{n: 0.0 for n in detectors}}
    t = time.perf_counter()
    bar = Progress("evaluate", total_batches or 0, unit="batch", enabled=progress)
    for images, labels in batches:
        bar.update(1)
        acc.seconds["images"] += time.perf_counter() - t  # generating or decoding
        acc.count += len(images)
        for name, det in detectors.items():
            t = time.perf_counter()
            if name == "classifier" and want_classes:
                f, logits = det.features_and_logits(images)
                predicted = logits.argmax(1)
                counts = torch.bincount(predicted, minlength=logits.shape[1])
                acc.class_counts = counts if acc.class_counts is None else acc.class_counts + counts
                if labels is not None:
                    acc.agree += int((predicted == labels.cpu()).sum())
                    acc.labelled += len(labels)
            else:
                f = det.features(images)
            acc.stats[name].update(f)
            if name in keep:
                acc.features[name].append(f)
            acc.seconds[name] += time.perf_counter() - t
        t = time.perf_counter()
    bar.close()
    return acc


def reduce_accumulated(acc: Accumulated, total: int, batch: int) -> Accumulated:
    """Combine every process's share (collectives: all ranks call this). Without torchrun: unchanged."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        for name, parts in acc.features.items():
            acc.features[name] = [torch.cat(parts)] if parts else []
        return acc
    for stats in acc.stats.values():
        stats.all_reduce()
    for name, parts in acc.features.items():
        dim = acc.stats[name].dim
        local = torch.cat(parts) if parts else torch.zeros((0, dim))
        acc.features[name] = [gather_sharded(local, total, batch)]
    if acc.class_counts is not None or acc.labelled:
        num = 0 if acc.class_counts is None else len(acc.class_counts)
        nums = torch.tensor([num], dtype=torch.int64)
        dist.all_reduce(nums, op=dist.ReduceOp.MAX)
        counts = torch.zeros(int(nums), dtype=torch.int64)
        if acc.class_counts is not None:
            counts[:num] = acc.class_counts
        extra = torch.tensor([acc.agree, acc.labelled, acc.count], dtype=torch.int64)
        dist.all_reduce(counts)
        dist.all_reduce(extra)
        acc.class_counts = counts
        acc.agree, acc.labelled, acc.count = (int(v) for v in extra)
    else:
        n = torch.tensor([acc.count], dtype=torch.int64)
        dist.all_reduce(n)
        acc.count = int(n)
    secs = torch.tensor(list(acc.seconds.values()), dtype=torch.float64)
    dist.all_reduce(secs, op=dist.ReduceOp.MAX)  # the slowest process sets the wall time
    acc.seconds = dict(zip(acc.seconds, secs.tolist(), strict=True))
    return acc


def compute_metrics(acc: Accumulated, references: dict[str, Reference], metrics: list[str]) -> dict:
    """The selected metrics from reduced accumulations and each detector's reference."""
    out: dict = {}
    for m in metrics:
        det, kind = METRICS[m]
        if kind == "fd":
            stats, ref = acc.stats[det], references[det]
            if len(ref.mu) != stats.dim:
                raise UserInputError(
                    f"{m}: reference has {len(ref.mu)}-d features, the detector {stats.dim}-d"
                )
            out[m] = frechet_distance_gaussians(stats.mean, stats.cov, ref.mu, ref.sigma)
        elif kind == "pr":
            ref = references[det]
            if ref.features is None:
                raise UserInputError(
                    f"{m} needs reference features; the reference {ref.dataset!r} has statistics only"
                )
            out[m] = manifold_metrics(ref.features, acc.features[det][0], k=PR_K)
        elif kind == "classes":
            counts = acc.class_counts
            out[m] = {
                "histogram": (counts.double() / counts.sum()).tolist() if counts is not None else None,
                "agreement": acc.agree / acc.labelled if acc.labelled else None,
                "labelled": acc.labelled,
            }
    return out


def needs_reference_features(metrics: list[str], detector: str) -> bool:
    return any(METRICS[m] == (detector, "pr") for m in metrics)
