"""The toy's trade-off fronts over several model seeds, read at equal outliers.

    python benchmarks/toy_fronts.py --seeds 0-4 --root out/toy-sweeps

Runs `autoguidance toy-sweep`'s sweep for each model seed into ROOT/SEED (default recipe, 16,384 samples
per point; a seed whose sweep.json is there is read, not resampled), then averages over the seeds what
CFG and truncation need to reach autoguidance's outlier fraction at each w (`at_equal_outliers`), with
the number of seeds on which each gets that few at all. Writes benchmarks/results/toy_fronts.json and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from autoguidance.io import atomic
from autoguidance.seeds import parse_seeds
from autoguidance.toy.experiment import ToySettings
from autoguidance.toy.sweep import COMPARED, SWEEP_METHODS, run_sweep


def sweep_of(seed: int, root: Path, samples: int) -> dict:
    path = root / str(seed) / "sweep.json"
    if path.exists():
        return json.loads(path.read_text())
    settings = ToySettings.create(model_seed=seed, samples=samples, device="cpu")
    return run_sweep(settings, root / str(seed), progress=False)


def summarise(sweeps: dict[int, dict]) -> list[dict]:
    """Per autoguidance w: each method's mean metrics over the seeds where it reaches that few outliers."""
    by_w: dict[float, list[dict]] = {}
    for sweep in sweeps.values():
        for row in sweep["at_equal_outliers"]:
            by_w.setdefault(row["autoguidance"]["w"], []).append(row)
    summary = []
    for w, rows in sorted(by_w.items()):
        entry = {"w": w, "seeds": len(rows), "outliers": float(np.mean([r["outliers"] for r in rows]))}
        for method in SWEEP_METHODS:
            reached = [r[method] for r in rows if r.get(method) is not None]
            entry[method] = {
                "seeds_reached": len(reached),
                **{k: float(np.mean([m[k] for m in reached])) for k in ("w", *COMPARED) if reached},
            }
        summary.append(entry)
    return summary


def markdown(summary: list[dict]) -> str:
    lines = [
        "| AG w | AG outliers | method | seeds reaching it | its strength | depth TV | recall | branch TV |"
        " outer ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in summary:
        for method in SWEEP_METHODS:
            m = e[method]
            if not m["seeds_reached"]:
                lines.append(f"| {e['w']:g} | {e['outliers']:.4f} | {method} | 0/{e['seeds']} | | | | | |")
                continue
            lines.append(
                f"| {e['w']:g} | {e['outliers']:.4f} | {method} | {m['seeds_reached']}/{e['seeds']} | "
                f"{m['w']:.3g} | {m['depth_tv']:.3f} | {m['recall']:.3f} | {m['branch_tv']:.3f} | "
                f"{m['outer_depth_ratio']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4", help="model seeds, e.g. 0-4")
    parser.add_argument("--root", required=True, help="folder of the per-seed sweeps (ROOT/SEED)")
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    sweeps = {seed: sweep_of(seed, Path(args.root), args.samples) for seed in parse_seeds(args.seeds)}
    summary = summarise(sweeps)
    result = {
        "seeds": sorted(sweeps),
        "samples": {seed: s["settings"]["samples"] for seed, s in sweeps.items()},
        "wall_seconds": time.perf_counter() - start,
        "at_equal_outliers_mean": summary,
        "per_seed": {
            seed: {"curves": s["curves"], "at_equal_outliers": s["at_equal_outliers"]}
            for seed, s in sweeps.items()
        },
        "fewest_outliers": {
            method: [min(p["outlier_fraction"] for p in s["curves"][method]) for s in sweeps.values()]
            for method in SWEEP_METHODS
        },
    }
    path = Path(__file__).parent / "results" / "toy_fronts.json"
    atomic.write_json(path, result)
    print(markdown(summary))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
