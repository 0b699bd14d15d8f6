"""Summarise benchmarks/results/toy_recipe/raw: per (main recipe, guide, w) over the model seeds measured,
the outlier reduction (mean, min, max), worst depth TV, outer-depth ratio range, worst recall, and which of
the issue's targets hold. Writes benchmarks/results/toy_recipe/summary.json and prints a table.

    python benchmarks/toy_recipe/summarize.py [--min-seeds 3] [--samples 16384] [--main-filter TEXT] \
        [--pass-only]

Targets (issue, item 1): reduction >= 30% on every seed and >= 35% on average; depth TV <= 0.08;
outer-depth ratio in [0.8, 1.25]; recall >= 0.70 (16,384 samples).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "toy_recipe"
RAW = RESULTS / "raw"
MODEL_SEED = re.compile(r"-s(\d+)$")


def collect(samples: int):
    """{(main family, guide label): {model seed: result}}"""
    table = defaultdict(dict)
    for folder in sorted(RAW.glob("*")):
        m = MODEL_SEED.search(folder.name)
        if not m:
            continue
        family, model_seed = folder.name[: m.start()], (int(m.group(1)) - 1) // 3
        for f in folder.glob(f"*-n{samples}.json"):
            if f.name.startswith("unguided"):
                continue
            table[(family, f.name[: -len(f"-n{samples}.json")])][model_seed] = json.loads(f.read_text())
    return table


def rows(table, min_seeds: int):
    out = []
    for (family, guide), runs in sorted(table.items()):
        if len(runs) < min_seeds:
            continue
        weights = set.intersection(*(set(r["w"]) for r in runs.values()))
        for w in sorted(weights, key=float):
            per = {s: r["w"][w] for s, r in sorted(runs.items())}
            red = np.array(
                [1 - p["outlier_fraction"] / runs[s]["unguided"]["outlier_fraction"] for s, p in per.items()]
            )
            dtv = np.array([p["depth_tv"] for p in per.values()])
            odr = np.array([p["outer_depth_ratio"] for p in per.values()])
            rec = np.array([p["recall"] for p in per.values()])
            btv = np.array([p["branch_tv"] for p in per.values()])
            ok = {
                "reduction_each>=30%": bool(red.min() >= 0.30),
                "reduction_mean>=35%": bool(red.mean() >= 0.35),
                "depth_tv<=0.08": bool(dtv.max() <= 0.08),
                "outer_ratio_in_0.8-1.25": bool(odr.min() >= 0.8 and odr.max() <= 1.25),
                "recall>=0.70": bool(rec.min() >= 0.70),
            }
            out.append(
                {
                    "main": family,
                    "guide": guide,
                    "w": float(w),
                    "seeds": sorted(per),
                    "reduction": {
                        "mean": red.mean(),
                        "min": red.min(),
                        "max": red.max(),
                        "per_seed": red.tolist(),
                    },
                    "depth_tv": {"mean": dtv.mean(), "max": dtv.max()},
                    "outer_depth_ratio": {"min": odr.min(), "max": odr.max()},
                    "recall": {"mean": rec.mean(), "min": rec.min()},
                    "branch_tv": {"mean": btv.mean()},
                    "guide_loss": float(np.mean([r["guide_meta"]["heldout_loss"] for r in runs.values()])),
                    "targets": ok,
                    "all_hold": all(ok.values()),
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=16384)
    ap.add_argument("--main-filter", default="")
    ap.add_argument("--guide-filter", default="")
    ap.add_argument("--pass-only", action="store_true")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    r = rows(collect(a.samples), a.min_seeds)
    if a.write:
        (RESULTS / "summary.json").write_text(json.dumps(r, indent=1, default=float))
    print(
        f"{'main':<46}{'guide':<44}{'w':>5}{'n':>3} {'red mean/min/max':>18} {'dTVmax':>7} "
        f"{'odr min-max':>11}"
        f" {'rec min':>7} {'bTV':>6} {'gloss':>7} ok"
    )
    for x in r:
        if (
            a.main_filter not in x["main"]
            or a.guide_filter not in x["guide"]
            or (a.pass_only and not x["all_hold"])
        ):
            continue
        red = x["reduction"]
        fails = "".join("RMDOC"[i] for i, v in enumerate(x["targets"].values()) if not v)
        print(
            f"{x['main'][2:48]:<46}"
            f"{x['guide'][2:].replace('-tref512', '').replace('-wu0', ''):<44}"
            f"{x['w']:>5g}{len(x['seeds']):>3} "
            f"{100 * red['mean']:>6.1f}/{100 * red['min']:>4.0f}/{100 * red['max']:>4.0f}% "
            f"{x['depth_tv']['max']:>7.3f} "
            f"{x['outer_depth_ratio']['min']:>5.2f}-{x['outer_depth_ratio']['max']:<5.2f}"
            f" {x['recall']['min']:>7.3f} {x['branch_tv']['mean']:>6.3f} {x['guide_loss']:>7.4f} "
            f"{'ALL' if x['all_hold'] else 'fail:' + fails}"
        )


if __name__ == "__main__":
    main()
