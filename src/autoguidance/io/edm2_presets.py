"""EDM2's published autoguidance (Karras et al. 2024, Table 1 and App. B.2) and classifier-free guidance
(EDM2, Karras et al. 2024) configurations as named presets, resolved to local files: a path given by the
user, the cache, or a download.

Each preset names the main network and the guide by their published post-hoc EMA files, and the
guidance weight; the number in a file name is its training length in thousands of images, the last
number its EMA length sigma_rel. "-fid" presets are tuned for FID, "-dino" for FD_DINOv2.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from . import atomic
from .cache import cache_dir, file_sha256

EDM2_ROOT = "https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions"
ROOT_ENV = "AUTOGUIDANCE_EDM2_ROOT"  # a mirror of EDM2_ROOT (any URL urllib reads, file:// included)
CHECKSUMS = "checksums.json"


@dataclass(frozen=True)
class EDM2Preset:
    net: str  # file name under EDM2_ROOT
    guide: str
    guidance: float
    paper: str  # the published number this configuration gives

    def urls(self) -> tuple[str, str]:
        return f"{EDM2_ROOT}/{self.net}", f"{EDM2_ROOT}/{self.guide}"


def _p(net: str, guide: str, w: float, paper: str) -> EDM2Preset:
    return EDM2Preset(f"edm2-{net}.pkl", f"edm2-{guide}.pkl", w, paper)


EDM2_PRESETS: dict[str, EDM2Preset] = {
    "edm2-img512-s-autog-fid": _p("img512-s-2147483-0.070", "img512-xs-0134217-0.125", 2.10, "FID 1.34"),
    "edm2-img512-s-autog-dino": _p(
        "img512-s-2147483-0.120", "img512-xs-0134217-0.165", 2.45, "FD_DINOv2 36.67"
    ),
    "edm2-img512-xxl-autog-fid": _p("img512-xxl-0939524-0.075", "img512-m-0268435-0.155", 2.05, "FID 1.25"),
    "edm2-img512-xxl-autog-dino": _p("img512-xxl-0939524-0.130", "img512-m-0268435-0.205", 2.30, "FD_DINOv2"),
    "edm2-img512-s-uncond-autog-fid": _p(
        "img512-s-uncond-2147483-0.070", "img512-xs-uncond-0134217-0.110", 2.85, "FID 3.86 (unconditional)"
    ),
    "edm2-img512-s-uncond-autog-dino": _p(
        "img512-s-uncond-2147483-0.090", "img512-xs-uncond-0134217-0.125", 2.90, "FD_DINOv2 (unconditional)"
    ),
    "edm2-img64-s-autog-fid": _p("img64-s-1073741-0.045", "img64-xs-0134217-0.110", 1.70, "FID 1.01"),
    "edm2-img64-s-autog-dino": _p("img64-s-1073741-0.105", "img64-xs-0134217-0.175", 2.20, "FD_DINOv2"),
    # Classifier-free guidance as EDM2 released it: the guide is the unconditional XS network, trained as
    # long as the main model and taken at the main model's EMA length (EDM2, Karras et al. 2024, Table 3).
    "edm2-img512-xs-guid-fid": _p(
        "img512-xs-2147483-0.045", "img512-xs-uncond-2147483-0.045", 1.40, "FID 2.91"
    ),
    "edm2-img512-xs-guid-dino": _p(
        "img512-xs-2147483-0.150", "img512-xs-uncond-2147483-0.150", 1.70, "FD_DINOv2 79.94"
    ),
    "edm2-img512-s-guid-fid": _p(
        "img512-s-2147483-0.025", "img512-xs-uncond-2147483-0.025", 1.40, "FID 2.23"
    ),
    "edm2-img512-s-guid-dino": _p(
        "img512-s-2147483-0.085", "img512-xs-uncond-2147483-0.085", 1.90, "FD_DINOv2 52.32"
    ),
    "edm2-img512-m-guid-fid": _p(
        "img512-m-2147483-0.030", "img512-xs-uncond-2147483-0.030", 1.20, "FID 2.01"
    ),
    "edm2-img512-l-guid-fid": _p(
        "img512-l-1879048-0.015", "img512-xs-uncond-2147483-0.015", 1.20, "FID 1.88"
    ),
}


def get_preset(name: str) -> EDM2Preset:
    if name not in EDM2_PRESETS:
        raise UserInputError(f"unknown EDM2 preset {name!r}; known: {', '.join(EDM2_PRESETS)}")
    return EDM2_PRESETS[name]


def _read_checksums(cache: Path) -> dict[str, str]:
    try:
        return json.loads((cache / CHECKSUMS).read_text())
    except (OSError, ValueError):
        return {}


def resolve_file(url: str, cache: Path | None = None, download: bool = True) -> tuple[Path, str]:
    """(local path, sha256) of `url`: from the cache if there, else downloaded into it (atomically).

    The first download records the file's sha256 in the cache's checksums.json; later uses verify the
    cached file against it (a changed or truncated file is an error, not silently used). Offline, a
    missing file is a one-line error saying where to put it.
    """
    cache = cache or cache_dir()
    name = url.rsplit("/", 1)[-1]
    target = cache / name
    sums = _read_checksums(cache)
    if target.exists():
        digest = file_sha256(target)
        if name in sums and sums[name] != digest:
            raise UserInputError(f"cached {target} does not match its recorded sha256 {sums[name][:12]}...")
        return target, digest
    if not download:
        raise UserInputError(f"{name} is not in the cache {cache}; download it from {url} to {target}")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as src:  # noqa: S310
            shutil.copyfileobj(src, out)
        digest = file_sha256(tmp)
        if name in sums and sums[name] != digest:
            raise UserInputError(f"downloaded {name} does not match its recorded sha256")
        os.chmod(tmp, 0o666 & ~atomic._umask())  # ordinary permissions, as the package's other outputs
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as exc:
        raise UserInputError(
            f"cannot download {url} ({getattr(exc, 'reason', exc)}); put the file at {target} instead"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    sums[name] = digest
    atomic.write_json(cache / CHECKSUMS, sums)
    return target, digest


def resolve_preset(
    name: str, cache: Path | None = None, download: bool = True, root: str | None = None
) -> tuple[EDM2Preset, Path, Path]:
    """The preset and the local paths of its main network and guide (see `resolve_file`)."""
    preset = get_preset(name)
    base = root or os.environ.get(ROOT_ENV) or EDM2_ROOT
    net, _ = resolve_file(f"{base}/{preset.net}", cache, download)
    guide, _ = resolve_file(f"{base}/{preset.guide}", cache, download)
    return preset, net, guide
