"""FD_classifier of the image sets saved by `weak_guides_mnist.py --save DIR`, against MNIST's training
split, with held-out real images of the same count as the floor (FD of a finite sample is biased upward
by roughly const / N, so only sets of equal size compare).

    python benchmarks/weak_guides_fd.py DIR [--out benchmarks/results/weak_guides_fd.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from autoguidance.data import load_builtin
from autoguidance.io import atomic
from autoguidance.metrics.detectors import make_detector
from autoguidance.metrics.frechet import FeatureStats, frechet_distance_gaussians
from autoguidance.metrics.reference import dataset_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "weak_guides_fd.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    det = make_detector("classifier", dataset="mnist")
    ref = dataset_reference("mnist:train", det)

    def fd(images: torch.Tensor) -> float:
        s = FeatureStats.of(det.features(images))
        return frechet_distance_gaussians(s.mean, s.cov, ref.mu, ref.sigma)

    rows = {}
    sets = sorted(Path(args.samples).glob("*.npz"))
    n = len(np.load(sets[0])["images"])
    test = load_builtin("mnist", "test").images  # (N, 1, 32, 32) in [-1, 1]
    real = ((test + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    step = len(real) // n
    rows["real (held-out test images)"] = fd(real[::step][:n])
    for path in sets:
        rows[path.stem] = fd(torch.from_numpy(np.load(path)["images"]))
    for name, value in rows.items():
        print(f"{name:<50s} FD_classifier {value:8.2f}  (N = {n})")
    atomic.write_json(args.out, {"count": n, "reference": "mnist:train", "fd_classifier": rows})


if __name__ == "__main__":
    main()
