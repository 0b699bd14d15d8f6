"""A number for Figure 1's "knots": the share of samples lying in over-dense grid cells, i.e. the mass
sum_c max(0, p_samples(c) - K p_true(c)) over square cells of side H, p_true from 2^21 exact samples.
Exact samples score near 0; clumps at tips and dense knots along branches raise it. "support" counts
only cells holding at least SUPPORT of the exact mass (outliers in empty cells excluded), "all" every cell.

    python benchmarks/toy_recipe/knots.py out/research/figure/NAME [...]

(reads results.npz; prints and writes JSON)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from autoguidance.toy.mixture import ToyMixture  # noqa: E402

CELLS = (0.02, 0.04)
FACTORS = (2.0, 4.0)


def hist(x: np.ndarray, h: float) -> dict:
    ij = np.floor(x / h).astype(np.int64)
    keys, counts = np.unique(ij[:, 0] * 100003 + ij[:, 1], return_counts=True)
    return dict(zip(keys.tolist(), (counts / len(x)).tolist(), strict=True))


SUPPORT = 2e-5  # cells with at least this exact mass (about 42 of the 2^21 exact samples) are "on support"


def excess(samples: np.ndarray, truth: dict, h: float, k: float, on_support: bool) -> float:
    """Over-dense mass; on_support: only cells the data occupies, so outliers in empty cells do not count."""
    return float(
        sum(
            max(0.0, p - k * truth.get(c, 0.0))
            for c, p in hist(samples, h).items()
            if not on_support or truth.get(c, 0.0) >= SUPPORT
        )
    )


def main() -> None:
    mix = ToyMixture((0,))
    exact = mix.sample(2**21, 0.0, generator=torch.Generator().manual_seed(99), dtype=torch.float64).numpy()
    truths = {h: hist(exact, h) for h in CELLS}
    out = {}
    for folder in sys.argv[1:]:
        arrays = np.load(Path(folder) / "results.npz")
        row = {}
        for name in ("ground_truth", "unguided", "autoguidance", "cfg", "truncation"):
            x = arrays[f"samples_{name}"].astype(np.float64)
            x = x[np.isfinite(x).all(axis=1)]
            row[name] = {
                f"{'support' if s else 'all'}-h{h:g}-x{k:g}": excess(x, truths[h], h, k, s)
                for s in (True, False)
                for h in CELLS
                for k in FACTORS
            }
        out[Path(folder).name] = row
        print(
            Path(folder).name,
            {
                n: {k: round(v, 4) for k, v in r.items()}
                for n, r in row.items()
                if n in ("ground_truth", "unguided", "autoguidance")
            },
        )
    lib.atomic.write_json(lib.RESULTS / "knots.json", out)


if __name__ == "__main__":
    main()
