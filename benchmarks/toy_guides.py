"""Which weak model guides best? Autoguidance's (outliers, branch TV) front for several guide settings
(width, training iterations, EMA length) on one main model, against CFG's and truncation's fronts.

    python benchmarks/toy_guides.py --root /tmp/toy-guides [--model-seed 0] [--samples 8192]

ROOT/base holds the main and unconditional models and the full three-method sweep; ROOT/<variant> a copy
of the main model, that variant's guide and its autoguidance sweep. Writes
benchmarks/results/toy_guides.json and ROOT/guides.png.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from autoguidance.io import atomic
from autoguidance.toy.experiment import ToySettings
from autoguidance.toy.figures import FRONT_COLORS, plt
from autoguidance.toy.sweep import run_sweep

# (width, iterations, EMA sigma_rel); the first is the recipe's guide.
VARIANTS = [(32, 512, 0.010), (16, 512, 0.010), (32, 128, 0.010), (32, 512, 0.05), (16, 256, 0.010)]
WEIGHTS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)


def variant_name(v) -> str:
    return f"w{v[0]}-it{v[1]}-ema{v[2]:g}"


def draw(base: dict, variants: dict, path: Path, samples: int) -> None:
    fig, ax = plt.subplots(figsize=(8.5, 6.2), constrained_layout=True)
    for method in ("cfg", "truncation"):
        c = base["curves"][method]
        ax.plot(
            [p["branch_tv"] for p in c],
            [100 * p["outlier_fraction"] for p in c],
            "o--",
            color=FRONT_COLORS[method],
            label={"cfg": "CFG (unconditional guide)", "truncation": "naive truncation (w = score scale)"}[
                method
            ],
            ms=3,
        )
    cmap = plt.get_cmap("viridis")
    for i, (name, res) in enumerate(variants.items()):
        c = res["curves"]["autoguidance"]
        ax.plot(
            [p["branch_tv"] for p in c],
            [100 * p["outlier_fraction"] for p in c],
            "o-",
            color=cmap(i / max(1, len(variants) - 1)),
            label=f"autoguidance, guide {name}",
            ms=3,
        )
    ax.set_xlabel("branch TV")
    ax.set_ylabel("outliers (% of samples below the 1% density quantile)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"Which guide? Outliers vs branch TV over w = {', '.join(f'{w:g}' for w in WEIGHTS)} (lower left is "
        f"better)\nsame main model for all; {samples} samples per point; guide named width-iterations-EMA",
        fontsize=10,
    )
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--model-seed", type=int, default=0)
    parser.add_argument("--recipe", default="default", choices=["default", "paper"])
    parser.add_argument("--samples", type=int, default=8192)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    start = time.perf_counter()
    common = dict(recipe=args.recipe, model_seed=args.model_seed, samples=args.samples, device="cpu")
    base = run_sweep(ToySettings.create(**common), root / "base", WEIGHTS, progress=False)
    results = {}
    for v in VARIANTS:
        name = variant_name(v)
        folder = root / name
        (folder / "models").mkdir(parents=True, exist_ok=True)
        for model in ("main", "uncond"):
            shutil.copyfile(
                root / "base" / "models" / f"{model}.safetensors", folder / "models" / f"{model}.safetensors"
            )
        settings = ToySettings.create(guide_width=v[0], guide_iterations=v[1], guide_ema=v[2], **common)
        results[name] = run_sweep(settings, folder, WEIGHTS, progress=False, methods=("autoguidance",))
        best = min(results[name]["curves"]["autoguidance"], key=lambda p: p["outlier_fraction"])
        print(
            f"{name}: guide loss {results[name]['models']['guide']['heldout_loss']:.4f}; fewest outliers "
            f"{best['outlier_fraction']:.4f} at w={best['w']:g} (branch TV {best['branch_tv']:.3f})",
            flush=True,
        )
    draw(base, results, root / "guides.png", args.samples)
    out = {
        "recipe": args.recipe,
        "model_seed": args.model_seed,
        "samples": args.samples,
        "weights": list(WEIGHTS),
        "wall_seconds": time.perf_counter() - start,
        "base": {k: base[k] for k in ("curves", "unguided", "ground_truth", "models")},
        "variants": {
            k: {
                "curve": r["curves"]["autoguidance"],
                "guide": r["models"]["guide"],
                "settings": r["settings"]["models"]["guide"],
            }
            for k, r in results.items()
        },
    }
    path = Path(__file__).parent / "results" / "toy_guides.json"
    atomic.write_json(path, out)
    print(f"wrote {path} and {root / 'guides.png'}")


if __name__ == "__main__":
    main()
