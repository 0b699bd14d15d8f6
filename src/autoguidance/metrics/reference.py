"""Reference statistics: a detector's feature mean and covariance (and, for precision/recall, the
features themselves) of a reference image set, computed once per dataset and detector and cached.

Our file: safetensors holding `mu` (D,) float64, `sigma` (D, D) float64 and optionally `features` (N, D)
float32, with JSON metadata: detector name and version, dataset, resolution, channels, count. It is
written atomically under <cache>/reference/ (see `autoguidance.io.cache`) and reused while the detector's
version is the same.

EDM2's published reference files are pickles of {'fid': {'mu', 'sigma'}, 'fd_dinov2': {'mu', 'sigma'}}:
they are read with the restricted unpickler (io/restricted_pickle.py: inert records, no code runs). They
carry no resolution, channel count or features, so those checks and precision/recall are unavailable with
them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError
from ..io import checkpoint, restricted_pickle
from ..io.cache import cache_dir
from ..progress import Progress
from .detectors.base import Detector
from .frechet import FeatureStats
from .image_sources import dataset_uint8

KIND = "reference-statistics"
# Detector name in our files -> key in EDM2's reference pickles.
EDM2_KEYS = {"inception": "fid", "dinov2": "fd_dinov2"}


@dataclass
class Reference:
    detector: str
    detector_version: str | None  # None for foreign files that do not say
    dataset: str
    resolution: int | None
    channels: int | None
    count: int | None
    mu: np.ndarray
    sigma: np.ndarray
    features: torch.Tensor | None = None

    def describe(self) -> dict:
        return {
            "detector": self.detector,
            "detector_version": self.detector_version,
            "dataset": self.dataset,
            "resolution": self.resolution,
            "channels": self.channels,
            "count": self.count,
            "has_features": self.features is not None,
        }

    def check_images(self, resolution: int, channels: int) -> None:
        """UserInputError unless evaluated images match the reference's resolution and channel count."""
        if self.resolution is not None and self.resolution != resolution:
            raise UserInputError(
                f"reference {self.dataset!r} is {self.resolution}x{self.resolution}, "
                f"the evaluated images are {resolution}x{resolution}"
            )
        if self.channels is not None and self.channels != channels:
            raise UserInputError(
                f"reference {self.dataset!r} has {self.channels} channel(s), the evaluated images {channels}"
            )


def compute_reference(
    images: torch.Tensor,
    detector: Detector,
    dataset: str,
    batch: int = 64,
    keep_features: bool = True,
    progress: bool = False,
) -> Reference:
    """Statistics of dataset images (N, C, H, W) float in [-1, 1] under `detector`."""
    stats = FeatureStats(detector.feature_dim)
    kept = []
    bar = Progress(f"reference {detector.name}", len(images), unit="img", enabled=progress)
    for start in range(0, len(images), batch):
        f = detector.features(dataset_uint8(images[start : start + batch]))
        stats.update(f)
        if keep_features:
            kept.append(f)
        bar.update(len(f))
    bar.close()
    return Reference(
        detector=detector.name,
        detector_version=detector.version,
        dataset=dataset,
        resolution=int(images.shape[2]),
        channels=int(images.shape[1]),
        count=stats.count,
        mu=stats.mean,
        sigma=stats.cov,
        features=torch.cat(kept) if keep_features else None,
    )


def save_reference(path: str | os.PathLike, ref: Reference) -> None:
    tensors = {"mu": torch.from_numpy(ref.mu), "sigma": torch.from_numpy(ref.sigma)}
    if ref.features is not None:
        tensors["features"] = ref.features.float()
    meta = {"kind": KIND, **ref.describe()}
    meta.pop("has_features")
    checkpoint.save(path, tensors, meta)


def load_reference(path: str | os.PathLike, detector: str) -> Reference:
    """A reference file: ours (.safetensors) or EDM2's (.pkl, restricted unpickling), for `detector`."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"reference statistics file {str(p)!r} does not exist")
    if p.suffix == ".pkl":
        return _load_edm2_pickle(p, detector)
    tensors, meta = checkpoint.load(p, kind=KIND)
    if meta.get("detector") != detector:
        raise UserInputError(
            f"reference {str(p)!r} holds {meta.get('detector')!r} statistics, not {detector!r}"
        )
    if "mu" not in tensors or "sigma" not in tensors:
        raise UserInputError(f"reference {str(p)!r} lacks mu or sigma")
    return Reference(
        detector=detector,
        detector_version=meta.get("detector_version"),
        dataset=str(meta.get("dataset")),
        resolution=meta.get("resolution"),
        channels=meta.get("channels"),
        count=meta.get("count"),
        mu=tensors["mu"].double().numpy(),
        sigma=tensors["sigma"].double().numpy(),
        features=tensors.get("features"),
    )


def _load_edm2_pickle(path: Path, detector: str) -> Reference:
    data = restricted_pickle.to_plain(restricted_pickle.load(path))
    key = EDM2_KEYS.get(detector)
    if not isinstance(data, dict) or key not in data or not isinstance(data[key], dict):
        raise UserInputError(
            f"reference pickle {str(path)!r} has no {key!r} statistics for detector {detector!r}"
        )
    entry = data[key]
    mu, sigma = entry.get("mu"), entry.get("sigma")
    if not isinstance(mu, np.ndarray) or not isinstance(sigma, np.ndarray):
        raise UserInputError(f"reference pickle {str(path)!r}: {key} needs numpy arrays 'mu' and 'sigma'")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)) or mu.dtype.kind != "f" or sigma.dtype.kind != "f":
        raise UserInputError(
            f"reference pickle {str(path)!r}: {key} has mu {mu.shape} and sigma {sigma.shape}, "
            "expected float (D,) and (D, D)"
        )
    return Reference(
        detector=detector,
        detector_version=None,
        dataset=str(path),
        resolution=None,
        channels=None,
        count=None,
        mu=mu.astype(np.float64),
        sigma=sigma.astype(np.float64),
    )


def stats_file_for(files, detector: str) -> str | None:
    """The first of the statistics `files` (ours: .safetensors; EDM2: .pkl) that holds statistics for
    `detector`; None if none does. A missing file is a one-line error."""
    for f in files:
        if not Path(f).is_file():
            raise UserInputError(f"reference statistics file {f!r} does not exist")
        if Path(f).suffix == ".pkl":
            data = restricted_pickle.load(f)
            if isinstance(data, dict) and EDM2_KEYS.get(detector) in data:
                return str(f)
        elif checkpoint.read_metadata(f, label="reference statistics").get("detector") == detector:
            return str(f)
    return None


def cached_path(dataset: str, detector: Detector) -> Path:
    """<cache>/reference/<dataset>-<detector>-<digest of its version>.safetensors."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[-60:]
    digest = hashlib.sha256(detector.version.encode()).hexdigest()[:16]
    return cache_dir() / "reference" / f"{safe}-{detector.name}-{digest}.safetensors"


def dataset_reference(
    spec: str, detector: Detector, batch: int = 64, progress: bool = False, use_cache: bool = True
) -> Reference:
    """The reference of a dataset spec ('mnist:train', a folder, a zip) for `detector`, from the cache
    when there (built-in datasets only: a folder's contents may change), else computed and cached."""
    from ..data import BUILTIN_NAMES, load_dataset

    builtin = spec.partition(":")[0] in BUILTIN_NAMES
    name = spec if ":" in spec or not builtin else f"{spec}:train"
    path = cached_path(name, detector)
    if use_cache and builtin and path.is_file():
        ref = load_reference(path, detector.name)
        if ref.detector_version == detector.version:
            return ref
    data = load_dataset(spec)
    ref = compute_reference(data.images, detector, name, batch=batch, progress=progress)
    if use_cache and builtin:
        save_reference(path, ref)
    return ref
