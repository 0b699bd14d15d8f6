"""The toy over several model seeds: every method's metrics per seed, and their mean and spread.

    python benchmarks/toy_seeds.py --recipe paper --seeds 0-4 --root /tmp/toy-seeds

Each model seed trains its own three models (into ROOT/RECIPE/SEED, reused when rerun: the run resumes
where it stopped) and samples the five methods with the same sample seeds. Writes
benchmarks/results/toy_seeds-RECIPE.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from autoguidance import atomic
from autoguidance.experiments.toy import ToySettings, run_toy
from autoguidance.seeds import parse_seeds

SUMMARY_METRICS = (
    "outlier_fraction",
    "branch_tv",
    "depth_tv",
    "within_depth_tv",
    "outer_depth_ratio",
    "recall",
    "recall_outer",
)


def spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def summarise(runs: dict[int, dict]) -> dict:
    first = next(iter(runs.values()))
    out = {"methods": {}, "models": {}}
    for method in first["methods"]:
        out["methods"][method] = {
            k: spread([r["methods"][method][k] for r in runs.values()]) for k in SUMMARY_METRICS
        }
    for name in first["models"]:
        out["models"][name] = {
            "heldout_loss": spread([r["models"][name]["heldout_loss"] for r in runs.values()])
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="default", choices=["default", "paper"])
    parser.add_argument("--seeds", default="0-4", help="model seeds, e.g. 0-4")
    parser.add_argument("--root", required=True, help="folder for the per-seed runs (models are kept)")
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {}
    start = time.perf_counter()
    for seed in parse_seeds(args.seeds):
        settings = ToySettings.create(recipe=args.recipe, model_seed=seed, samples=args.samples, device="cpu")
        m = run_toy(settings, Path(args.root) / args.recipe / str(seed), progress=False, figures=False)
        runs[seed] = {"methods": m["methods"], "models": m["models"], "timings": m["timings"]}
        u, a = m["methods"]["unguided"], m["methods"]["autoguidance"]
        main_model = m["models"]["main"]
        print(
            f"seed {seed}: main loss {main_model['heldout_loss']:.4f} gain {main_model['gain']:+.2f}"
            f" | unguided {u['outlier_fraction']:.4f} / {u['branch_tv']:.3f}"
            f" | autoguided {a['outlier_fraction']:.4f} / {a['branch_tv']:.3f}"
            f" | {m['timings']['total']:.0f} s",
            flush=True,
        )
    result = {
        "recipe": args.recipe,
        "seeds": sorted(runs),
        "samples": args.samples,
        "threads": args.threads,
        "wall_seconds": time.perf_counter() - start,
        "summary": summarise(runs),
        "runs": {str(k): v for k, v in runs.items()},
    }
    path = Path(__file__).parent / "results" / f"toy_seeds-{args.recipe}.json"
    atomic.write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
