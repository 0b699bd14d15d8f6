"""The package's cache folder and file digests, shared by the metrics (detector weights, reference
statistics, the small classifiers) and interop (EDM2's published networks).

`$AUTOGUIDANCE_CACHE` if set, else `~/.cache/autoguidance`. The metrics never download into it (weights
are copied there by the user, statistics and classifiers are computed locally); interop downloads EDM2's
networks into it on request, recording their SHA-256. Everything is written there atomically.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "AUTOGUIDANCE_CACHE"


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autoguidance"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), read in chunks: a weights file's identity."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
