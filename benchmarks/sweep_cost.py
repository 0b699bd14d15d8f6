"""What do sampler steps and sample counts cost in accuracy? Measured with common random numbers.

    python benchmarks/sweep_cost.py generate --main-run RUN_S --guide-run RUN_XS --out DIR \
        [--samples 1000] [--steps 16] [--step-samples 200] [--step-list 8,12,16,24,32]
    python benchmarks/sweep_cost.py measure --out DIR [--metric fd_classifier]

generate: images (uint8, in npz files under DIR, resumable by chunks) for the unguided main model and for
autoguidance at w = 2 (EMA 0.07 / 0.125, the README pair), `samples` seeds at `steps` Heun steps, and
for autoguidance `step-samples` seeds at each step count of `step-list`. All from the seeds 0, 1, ...:
common random numbers.

measure: the metric (a) against the step count, relative to the most steps, and the mean pixel change;
(b) against the sample count N: its mean and spread over disjoint seed blocks of size N, for each
configuration and for the difference between the two configurations, once with the same seeds for both
(common random numbers) and once with different seeds. Writes DIR/sweep_cost.json and prints tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from autoguidance.io import atomic
from autoguidance.sweeps.configs import normalise
from autoguidance.sweeps.evaluator import generate
from autoguidance.sweeps.measure import MetricsMeasure
from autoguidance.sweeps.models import ModelCache

CHUNK = 100


def configs(args) -> dict[str, dict]:
    base = {"main_run": args.main_run, "main_ema": 0.07}
    ag = {**base, "kind": "autoguidance", "guide_run": args.guide_run, "guide_ema": 0.125, "w": 2.0}
    out = {
        f"none-s{args.steps}": normalise({**base, "kind": "none", "steps": args.steps}),
        f"ag2-s{args.steps}": normalise({**ag, "steps": args.steps}),
    }
    for s in args.step_list:  # steps: guided only (the costlier case)
        out.setdefault(f"ag2-s{s}", normalise({**ag, "steps": s}))
    return out


def wanted(name: str, args) -> int:
    return args.samples if name.endswith(f"-s{args.steps}") else args.step_samples


def cmd_generate(args) -> None:
    torch.set_num_threads(1)
    out = Path(args.out)
    models = ModelCache(out / "cache")
    for name, config in configs(args).items():
        n = wanted(name, args)
        path = out / f"{name}.npz"
        have = np.load(path)["images"] if path.exists() else np.zeros((0, 32, 32, 1), np.uint8)
        while len(have) < n:
            t0 = time.perf_counter()
            seeds = list(range(len(have), min(n, len(have) + CHUNK)))
            images, labels, _ = generate(config, models, seeds, batch_size=50)
            have = np.concatenate([have, images.numpy()])
            labs = np.load(path)["labels"] if path.exists() else np.zeros(0, np.int64)
            labs = np.concatenate([labs, labels.numpy()])
            atomic.write_with(path, lambda p, h=have, lb=labs: np.savez(open(p, "wb"), images=h, labels=lb))
            dt = time.perf_counter() - t0
            print(f"{name}: {len(have)}/{n} images ({len(seeds) / dt:.2f} images/s)", flush=True)


def cmd_measure(args) -> None:
    torch.set_num_threads(1)
    out = Path(args.out)
    measure = MetricsMeasure([args.metric], reference=args.reference)
    sets = {p.stem: np.load(p) for p in sorted(out.glob("*.npz"))}

    def fd(name, idx):
        images = torch.from_numpy(sets[name]["images"][idx])
        labels = torch.from_numpy(sets[name]["labels"][idx])
        return measure(images, labels)[args.metric]

    result: dict = {"metric": args.metric, "steps": {}, "samples": {}}
    # (a) steps: the first step-samples seeds of each step count.
    for kind in ("ag2",):
        names = sorted((k for k in sets if k.startswith(kind + "-s")), key=lambda k: int(k.split("-s")[1]))
        if not names:
            continue
        n = min(len(sets[k]["images"]) for k in names)
        ref = sets[names[-1]]["images"][:n].astype(np.float64)
        rows = []
        for k in names:
            imgs = sets[k]["images"][:n].astype(np.float64)
            rows.append(
                {
                    "steps": int(k.split("-s")[1]),
                    "n": n,
                    args.metric: fd(k, slice(0, n)),
                    "mean_abs_pixel_change_vs_most_steps": float(np.abs(imgs - ref).mean()),
                }
            )
        result["steps"][kind] = rows
        print(f"\n{kind}: {args.metric} against steps ({n} images each, same seeds)")
        for r in rows:
            print(
                f"  steps {r['steps']:3d}: {r[args.metric]:.3f}   mean |pixel change| vs most steps "
                f"{r['mean_abs_pixel_change_vs_most_steps']:.2f} / 255"
            )
    # (b) sample counts: disjoint blocks of size N within the full set.
    a, b = f"none-s{args.steps}", f"ag2-s{args.steps}"
    if a in sets and b in sets:
        total = min(len(sets[a]["images"]), len(sets[b]["images"]))
        for n in (s for s in (62, 125, 250, 500, 1000, 2000) if 2 * s <= total or s == total):
            blocks = [slice(i, i + n) for i in range(0, total - n + 1, n)]
            fa = np.array([fd(a, s) for s in blocks])
            fb = np.array([fd(b, s) for s in blocks])
            crn = fb - fa  # same seeds for both configurations
            other = fb - np.roll(fa, 1) if len(blocks) > 1 else np.array([np.nan])  # different seeds
            row = {
                "n": n,
                "blocks": len(blocks),
                "none_mean": fa.mean(),
                "none_std": fa.std(ddof=1) if len(fa) > 1 else None,
                "ag_mean": fb.mean(),
                "ag_std": fb.std(ddof=1) if len(fb) > 1 else None,
                "diff_crn_mean": crn.mean(),
                "diff_crn_std": crn.std(ddof=1) if len(crn) > 1 else None,
                "diff_indep_std": other.std(ddof=1) if len(other) > 1 else None,
            }
            result["samples"][str(n)] = row
            print(
                f"  N {n:5d} ({len(blocks)} blocks): unguided {fa.mean():.3f} +- {row['none_std'] or 0:.3f}, "
                f"w=2 {fb.mean():.3f} +- {row['ag_std'] or 0:.3f}, difference with CRN {crn.mean():+.3f} +- "
                f"{row['diff_crn_std'] or 0:.3f}, without {row['diff_indep_std'] or 0:.3f}"
            )
    # (c) strokes: ink statistics of each set and of real digits (the training split), and the metric of
    # real held-out digits (the floor at the same count).
    from autoguidance.data import load_builtin
    from autoguidance.images import to_uint8

    real = {
        "mnist-train": to_uint8(load_builtin("mnist", split="train").images).numpy(),
        "mnist-test": to_uint8(load_builtin("mnist", split="test").images).numpy(),
    }
    result["strokes"] = {}
    print("\nstrokes: mean intensity, share of ink pixels (> 128), share saturated (>= 250), ink per digit")
    for name, imgs in [*real.items(), *((k, v["images"]) for k, v in sets.items())]:
        x = imgs.astype(np.float64)
        ink = (x > 128).mean(axis=(1, 2, 3))
        row = {
            "n": len(x),
            "mean": x.mean() / 255,
            "ink": ink.mean(),
            "saturated": (x >= 250).mean(),
            "saturated_share_of_ink": (x >= 250).sum() / max((x > 128).sum(), 1),
            "ink_std": ink.std(),
        }
        result["strokes"][name] = row
        print(
            f"  {name:12s} n {len(x):5d}: mean {row['mean']:.3f}, ink {row['ink']:.3f}, saturated "
            f"{row['saturated']:.3f} ({row['saturated_share_of_ink']:.2f} of ink)"
        )
    # The held-out split is stored class by class: a random subset, or the first N would miss classes.
    test = real["mnist-test"][np.random.default_rng(0).permutation(len(real["mnist-test"]))]
    for n in (250, 500):
        if n <= len(test):
            floor = measure(torch.from_numpy(test[:n]), None)[args.metric]
            result.setdefault("floor", {})[str(n)] = floor
            print(f"  {args.metric} of {n} held-out real digits against the training split: {floor:.3f}")
    # (d) is it the strokes? Make real held-out digits and unguided samples as bold and saturated as
    # the autoguided ones by a pure intensity map (contrast gain g, clipped), and measure them again.
    if a in sets:
        probe = {}
        print(
            "\nintensity map x -> min(255, g x) on real held-out digits and on unguided samples (500 each):"
        )
        for g in (1.0, 1.1, 1.2, 1.3, 1.5):
            row = {}
            for name, imgs in (("held-out", test[:500]), ("unguided", sets[a]["images"][:500])):
                mapped = np.minimum(255.0, imgs.astype(np.float64) * g).round().astype(np.uint8)
                x = mapped.astype(np.float64)
                row[name] = {
                    args.metric: measure(torch.from_numpy(mapped), None)[args.metric],
                    "ink": float((x > 128).mean()),
                    "saturated": float((x >= 250).mean()),
                }
            probe[str(g)] = row
            print(
                f"  g {g:.1f}: "
                + "; ".join(
                    f"{k} {v[args.metric]:.2f} (ink {v['ink']:.3f}, saturated {v['saturated']:.3f})"
                    for k, v in row.items()
                )
            )
        result["intensity_probe"] = probe
    atomic.write_json(out / "sweep_cost.json", json.loads(json.dumps(result, default=float)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--main-run", required=True)
    g.add_argument("--guide-run", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--samples", type=int, default=1000)
    g.add_argument("--steps", type=int, default=16)
    g.add_argument("--step-samples", type=int, default=200)
    g.add_argument("--step-list", type=lambda t: [int(v) for v in t.split(",")], default=[8, 12, 16, 24, 32])
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--metric", default="fd_classifier")
    m.add_argument("--steps", type=int, default=16)
    m.add_argument("--reference", default="mnist")
    args = p.parse_args()
    cmd_generate(args) if args.cmd == "generate" else cmd_measure(args)


if __name__ == "__main__":
    main()
