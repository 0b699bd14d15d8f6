"""Metrics for sweeps: the metrics package's detectors and reference statistics behind one callable.

Metric names are those of `autoguidance evaluate` (fid, fd_dinov2, fd_classifier, pr_*, classes); the
structured ones are flattened into numbers: pr_classifier.precision, pr_classifier.recall, ...,
classes.agreement. Any of these names can be a sweep's metric (precision, recall and agreement are to be
maximised). Detectors and references are built once, on first use, and reused for every configuration.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserInputError

MAXIMISE = ("precision", "recall", "density", "coverage", "agreement")


def flatten(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{name}.{k}"] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def direction_of(metric: str) -> str:
    return "maximize" if metric.rsplit(".", 1)[-1] in MAXIMISE else "minimize"


def base_metric(metric: str) -> str:
    """'pr_classifier.recall' -> 'pr_classifier': the metrics package's name."""
    return metric.split(".", 1)[0]


def stats_file_for_all(files: tuple[str, ...]) -> None:
    """One-line errors for statistics files that do not exist or hold no detector's statistics."""
    from ..metrics.detectors import DETECTOR_NAMES
    from ..metrics.reference import stats_file_for

    for f in files:
        if not any(stats_file_for((f,), name) for name in DETECTOR_NAMES):
            names = ", ".join(DETECTOR_NAMES)
            raise UserInputError(f"{f}: not a reference statistics file of any detector ({names})")


class MetricsMeasure:
    """(uint8 images, intended classes) -> flattened metrics against the `reference` dataset's statistics."""

    def __init__(
        self,
        metrics: list[str],
        reference: str = "mnist",
        device: str | torch.device = "cpu",
        batch: int = 250,
        inception_weights: str | None = None,
        dinov2_weights: str | None = None,
        ref_stats: tuple[str, ...] | list[str] = (),
    ):
        from ..metrics.evaluation import METRICS

        names = list(dict.fromkeys(base_metric(m) for m in metrics))
        unknown = [m for m in names if m not in METRICS]
        if unknown:
            raise UserInputError(f"unknown metric {unknown[0]!r}: choose from {', '.join(METRICS)}")
        self.metrics, self.reference, self.device, self.batch = names, reference, device, batch
        self.weights = {"inception_weights": inception_weights, "dinov2_weights": dinov2_weights}
        self.ref_stats = tuple(str(f) for f in ref_stats)
        stats_file_for_all(self.ref_stats)  # a missing file fails now, before any sampling
        self._detectors: dict | None = None
        self._references: dict | None = None

    def _setup(self) -> None:
        from ..metrics.detectors import make_detector
        from ..metrics.evaluation import detectors_for, needs_reference_features
        from ..metrics.reference import dataset_reference, load_reference, stats_file_for

        dataset = self.reference.partition(":")[0]
        self._detectors = {
            name: make_detector(name, dataset=dataset, device=self.device, **self.weights)
            for name in detectors_for(self.metrics)
        }
        self._references = {}
        for name, det in self._detectors.items():
            # A statistics file for this detector (say, FID's Inception statistics of a fixed reference
            # subset, made once) stands in for computing the reference dataset's statistics.
            stats = stats_file_for(self.ref_stats, name)
            ref = dataset_reference(self.reference, det) if stats is None else load_reference(stats, name)
            if ref.detector_version is not None and ref.detector_version != det.version:
                raise UserInputError(
                    f"reference statistics {stats} were made with {ref.detector_version!r}, "
                    f"not {det.version!r}"
                )
            if needs_reference_features(self.metrics, name) and ref.features is None:
                raise UserInputError(
                    f"the {name} reference of {self.reference} has no features for precision/recall"
                )
            self._references[name] = ref

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        from ..metrics.evaluation import accumulate, compute_metrics

        if self._detectors is None:
            self._setup()
        for ref in self._references.values():
            ref.check_images(images.shape[1], images.shape[3])
        batches = [
            (images[i : i + self.batch], None if labels is None else labels[i : i + self.batch])
            for i in range(0, len(images), self.batch)
        ]
        acc = accumulate(batches, self._detectors, self.metrics)
        acc.features = {k: [torch.cat(v)] if v else [] for k, v in acc.features.items()}
        return flatten(compute_metrics(acc, self._references, self.metrics))
