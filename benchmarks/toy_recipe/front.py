"""The trade-off fronts of one (main, guide, uncond) set: autoguidance, CFG (with one or more unconditional
models) and truncation over fine strength grids, on the same models and initial noise, 16,384 samples, and
whether autoguidance's front beats each other method's in (outliers, depth TV), (outliers, recall) and
(outliers, branch TV).

    python benchmarks/toy_recipe/front.py --label NAME --seed 0 --main 4096:4096:0.02 \
        --guide 64:512:0.01:4096::same --uncond 32:512:0.01:2048 --uncond 64:512:0.01:4096

"Beats" at a point p of another method: autoguidance's lower-left front, linearly interpolated at p's
x (depth TV, 1 - recall or branch TV), has fewer outliers than p. Points whose x lies outside the range
autoguidance reaches are counted apart ("out of reach"). Writes
benchmarks/results/toy_recipe/front-NAME.json and benchmarks/results/toy_recipe/front-NAME.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import lib  # noqa: E402
from screen import parse_guide, parse_main  # noqa: E402

from autoguidance.io import atomic  # noqa: E402

GRIDS = {
    "autoguidance": (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0),
    "cfg": (1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0),
    "truncation": (1.02, 1.05, 1.08, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5),
}
AXES = {
    "depth_tv": lambda p: p["depth_tv"],
    "1-recall": lambda p: 1 - p["recall"],
    "branch_tv": lambda p: p["branch_tv"],
    "1-recall_outer": lambda p: 1 - p["recall_outer"],
}


def lower_front(points, xkey):
    """The Pareto-optimal points (lower x and lower outliers), sorted by x."""
    pts = sorted((xkey(p), p["outlier_fraction"]) for p in points)
    front, best = [], np.inf
    for x, y in pts:
        if y < best:
            front.append((x, y))
            best = y
    return front


def interp(front, x, x_max):
    """Outliers autoguidance reaches at x on its front (linear between front points, flat after the last
    one); None if x lies outside the x range its swept points span (x_max: the largest x of any point)."""
    xs = [p[0] for p in front]
    ys = [p[1] for p in front]
    if x < xs[0] or x > x_max:
        return None
    if x >= xs[-1]:
        return ys[-1]
    return float(np.interp(x, xs, ys))


def compare(ag_points, other_points, axis):
    key = AXES[axis]
    front = lower_front(ag_points, key)
    x_max = max(key(p) for p in ag_points)
    rows = []
    for p in other_points:
        x, y = key(p), p["outlier_fraction"]
        a = interp(front, x, x_max)
        rows.append(
            {
                "w": p["w"],
                "x": x,
                "outliers": y,
                "autoguidance_outliers_at_x": a,
                "verdict": "out of reach"
                if a is None
                else ("autoguidance better" if a < y else "other better"),
            }
        )
    return rows


def at_equal_outliers(ag_points, other_points):
    """For each autoguidance point: the other method's metrics interpolated at the same outlier fraction,
    along its curve from w = 1 to its fewest outliers (where that curve falls monotonically enough to
    invert); None where the other method never gets that few outliers."""
    seg = []
    for p in sorted(other_points, key=lambda p: p["w"]):
        if not seg or p["outlier_fraction"] < seg[-1]["outlier_fraction"]:
            seg.append(p)
        else:
            break
    ys = np.array([p["outlier_fraction"] for p in seg])[::-1]
    rows = []
    for a in ag_points:
        y = a["outlier_fraction"]
        row = {
            "w": a["w"],
            "outliers": y,
            **{k: a[k] for k in ("depth_tv", "recall", "recall_outer", "branch_tv", "outer_depth_ratio")},
        }
        if y < ys[0] or y > ys[-1]:
            row["other"] = None
        else:
            row["other"] = {
                k: float(np.interp(y, ys, np.array([p[k] for p in seg])[::-1]))
                for k in ("w", "depth_tv", "recall", "recall_outer", "branch_tv", "outer_depth_ratio")
            }
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--main", required=True)
    ap.add_argument("--guide", required=True)
    ap.add_argument("--uncond", action="append", required=True)
    ap.add_argument("--samples", type=int, default=16384)
    a = ap.parse_args()
    path = lib.RESULTS / f"front-{a.label}.json"
    res = lib.read_json(path) or {"args": vars(a), "curves": {}}
    ev = lib.Evaluator()
    main, mmeta = lib.get_model(lib.main_cfg(a.seed, **parse_main(a.main)))
    guide, _ = lib.get_model(lib.guide_cfg(a.seed, **parse_guide(a.guide)))
    models = {"main": main, "guide": guide}
    jobs = [("autoguidance", "autoguidance", None), ("truncation", "truncation", None)]
    for u in a.uncond:
        spec = {k: v for k, v in parse_guide(u).items() if k != "same_seed"}
        jobs.append((f"cfg[{u}]", "cfg", spec))
    if "unguided" not in res:
        res["unguided"] = {"w": 1.0, **ev.measure(models, "unguided", 1.0, a.samples)}
        res["ground_truth"] = ev.ground_truth(a.samples)
    for name, method, spec in jobs:
        if spec is not None:
            models["uncond"], _ = lib.get_model(lib.uncond_cfg(a.seed, **spec))
        curve = res["curves"].setdefault(name, [])
        have = {p["w"] for p in curve}
        for w in GRIDS[method]:
            if w not in have:
                curve.append({"w": w, **ev.measure(models, method, w, a.samples)})
                curve.sort(key=lambda p: p["w"])
                atomic.write_json(path, res)
        print(
            name,
            " ".join(
                f"{p['w']:g}:{p['outlier_fraction']:.4f}/{p['depth_tv']:.3f}/{p['recall']:.3f}" for p in curve
            ),
            flush=True,
        )
    ag = [res["unguided"]] + res["curves"]["autoguidance"]
    res["comparison"] = {}
    for name in res["curves"]:
        if name == "autoguidance":
            continue
        res["comparison"][name] = {
            axis: compare(ag, [res["unguided"]] + res["curves"][name], axis) for axis in AXES
        }
        res.setdefault("equal_outliers", {})[name] = at_equal_outliers(
            ag, [res["unguided"]] + res["curves"][name]
        )
        for axis, rows in res["comparison"][name].items():
            counts = {
                v: sum(r["verdict"] == v for r in rows)
                for v in ("autoguidance better", "other better", "out of reach")
            }
            print(f"  vs {name} in (outliers, {axis}): {counts}")
    atomic.write_json(path, res)
    draw(res, lib.RESULTS / f"front-{a.label}.png")


def draw(res, path: Path) -> None:
    from autoguidance.toy.figures import plt

    fig, axes = plt.subplots(1, 4, figsize=(22, 5), constrained_layout=True)
    colors = {"autoguidance": "#d04040", "truncation": "#808080"}
    cfg_colors = ["#2060c0", "#20a0a0", "#8040c0"]
    for ax, axis in zip(axes, AXES, strict=True):
        key = AXES[axis]
        for i, (name, curve) in enumerate(res["curves"].items()):
            pts = [res["unguided"]] + curve
            c = colors.get(name) or cfg_colors[i % len(cfg_colors)]
            ax.plot(
                [key(p) for p in pts],
                [100 * p["outlier_fraction"] for p in pts],
                "o-",
                ms=3,
                color=c,
                label=name,
            )
            for p in pts[1:]:
                ax.annotate(f"{p['w']:g}", (key(p), 100 * p["outlier_fraction"]), fontsize=6, color=c)
        g = res["ground_truth"]
        ax.plot([key(g)], [100 * g["outlier_fraction"]], "k*", label="exact samples")
        ax.set_xlabel(axis)
        ax.set_ylabel("outliers (%)")
        ax.set_ylim(0, 16)
        ax.grid(alpha=0.3)
    axes[0].set_xlim(0, 0.3)
    axes[1].set_xlim(0, 0.8)
    axes[2].set_xlim(0, 0.6)
    axes[3].set_xlim(0, 1.0)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"fronts, {res['args']['label']}, model seed {res['args']['seed']}, {res['args']['samples']} samples "
        "(lower left is better; labels: w / score scale)"
    )
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
