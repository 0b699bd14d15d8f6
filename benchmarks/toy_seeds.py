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

from autoguidance.io import atomic
from autoguidance.seeds import parse_seeds
from autoguidance.toy.experiment import ToySettings, run_toy

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


def plot_training(root: Path, path: Path) -> None:
    """Main-model training curves of every recipe and seed under ROOT, coloured by the sign the output
    gain ended with, beside each run's exact held-out loss and unguided / autoguided outliers."""
    import json

    from autoguidance.io.checkpoint import read_metadata
    from autoguidance.toy.figures import plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    for col, recipe in enumerate(("paper", "default")):
        for folder in sorted((root / recipe).glob("*"), key=lambda f: int(f.name)):
            metrics = folder / "metrics.json"
            if not metrics.exists():
                continue
            m = json.loads(metrics.read_text())
            meta = read_metadata(folder / "models" / "main.safetensors")
            gain, loss = m["models"]["main"]["gain"], m["models"]["main"]["heldout_loss"]
            color = "#d04040" if gain > 0 else "#2060c0"
            curve = meta["loss_curve"]
            its = 32 * np.arange(len(curve)) + 16
            ls = "-" if recipe == "default" else "--"
            axes[0].plot(its, curve, ls, color=color, lw=1, alpha=0.8)
            x = col + 0.08 * (int(folder.name) - 2)
            axes[1].plot([x], [loss], "o", color=color)
            u, a = m["methods"]["unguided"], m["methods"]["autoguidance"]
            axes[2].plot([x - 0.12], [100 * u["outlier_fraction"]], "s", color=color, mfc="none")
            axes[2].plot([x + 0.12], [100 * a["outlier_fraction"]], "^", color=color)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("training loss (mean over 32 iterations)")
    axes[0].set_title(
        "Main model training (dashed: paper recipe, solid: ours)\nred: output gain ended > 0, blue: < 0"
    )
    for ax in axes[1:]:
        ax.set_xticks([0, 1], ["paper recipe", "ours (default)"])
        ax.set_xlim(-0.6, 1.6)
        ax.grid(alpha=0.3)
    axes[1].set_ylabel("exact held-out loss of the main model")
    axes[1].set_title("Exact held-out loss per model seed\n(colour: sign of the final output gain)")
    axes[2].set_ylabel("outliers (%)")
    axes[2].set_title("Outliers per model seed\nsquares: unguided, triangles: autoguided (w = 3)")
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="default", choices=["default", "paper"])
    parser.add_argument("--seeds", default="0-4", help="model seeds, e.g. 0-4")
    parser.add_argument("--root", required=True, help="folder for the per-seed runs (models are kept)")
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--from-runs", action="store_true", help="summarise the stored runs' metrics.json, no resampling"
    )
    parser.add_argument("--plot", default=None, help="only draw the training plot of ROOT into this PNG")
    args = parser.parse_args()
    if args.plot:
        plot_training(Path(args.root), Path(args.plot))
        return
    torch.set_num_threads(args.threads)
    runs = {}
    start = time.perf_counter()
    for seed in parse_seeds(args.seeds):
        if args.from_runs:
            import json

            m = json.loads((Path(args.root) / args.recipe / str(seed) / "metrics.json").read_text())
            runs[seed] = {"methods": m["methods"], "models": m["models"], "timings": m["timings"]}
            continue
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
