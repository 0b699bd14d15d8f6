"""Where metric files live when the user does not name them: detector weights and reference statistics.

`$AUTOGUIDANCE_CACHE` if set, else `~/.cache/autoguidance`. Nothing is ever downloaded into it by this
package: weights are copied there by the user (see the README), reference statistics and the small
classifiers are computed locally and written there atomically.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("AUTOGUIDANCE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autoguidance"
