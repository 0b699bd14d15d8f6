"""The default recipe's trained toy models, shipped with the package (model seeds 0-4).

Training the default recipe takes about 6 minutes at one thread, far beyond a demo's minute, so the
package carries the weights (about 70 KB each) that its own recipe trained. A file is used only for the
exact training settings stored in its metadata; anything else is trained. `autoguidance toy --retrain`
trains them again, and at one thread with the software versions stored in each file it reproduces them
bit for bit (tests/toy/test_toy_shipped.py). The files were written by

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 autoguidance toy --retrain --model-seed M --out out/toy-M
    python -m autoguidance.toy.shipped out/toy-M/models

for M = 0..4.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from functools import cache
from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError
from ..io import atomic, checkpoint

SHIPPED_DIR = Path(__file__).parent / "weights"


def software() -> dict:
    """What a training run's bits depend on besides its settings: library versions and threads."""
    import numba

    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
    }


@cache
def _index() -> dict[str, Path]:
    """Shipped file by the JSON of its training settings (read from the headers, no tensor data)."""
    found = {}
    for path in sorted(SHIPPED_DIR.glob("*.safetensors")):
        training = checkpoint.read_metadata(path, "shipped toy model").get("training")
        found[json.dumps(training, sort_keys=True)] = path
    return found


def shipped_model(training: dict) -> Path | None:
    """The shipped file trained with exactly these settings, or None."""
    return _index().get(json.dumps(training, sort_keys=True))


def ship(models_dir: Path, dest: Path = SHIPPED_DIR) -> list[Path]:
    """Copy the main, guide and uncond models of one training run into the package, named by their
    width, iterations and seed (main-w64-it4096-s1.safetensors, ...)."""
    written = []
    for name in ("main", "guide", "uncond"):
        src = models_dir / f"{name}.safetensors"
        meta = checkpoint.read_metadata(src, "toy model")
        t = meta["training"]
        target = dest / f"{name}-w{t['width']}-it{t['iterations']}-s{t['seed']}.safetensors"
        atomic.write_with(target, lambda tmp, src=src: shutil.copyfile(src, tmp))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m autoguidance.toy.shipped OUT/models", file=sys.stderr)
        return 2
    try:
        for path in ship(Path(argv[0])):
            print(path)
    except UserInputError as exc:
        print(f"autoguidance: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
