"""Tables and figures of an experiment, drawn from the results store alone (plan + finished rows).

For experiment NAME it writes, into one folder:
  NAME.json         every point (configuration, metric, other metrics) and each group's best
  NAME.md           a markdown table: each group's best configuration, its metric and the ratio to the
                    panel's first group (the baseline: no guidance, or the first curve)
  NAME-<panel>.png  the metric against each group's x field, one line per group (a single-point group is a
                    dashed horizontal reference line)
  NAME-images.png   the first seeds' images of each group's best configuration, a row per group
Points not measured yet are reported as missing, so a partial sweep draws what it has.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..images import make_grid, save_png  # noqa: E402
from ..io import atomic  # noqa: E402
from .configs import describe  # noqa: E402
from .measure import direction_of  # noqa: E402
from .plan import Plan, load_plan, read_thumbnails  # noqa: E402
from .store import ResultStore, canonical_key  # noqa: E402


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "main"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def collect(store: ResultStore, name: str) -> tuple[Plan, dict[str, Any]]:
    """The plan and its results as plain data: groups with their points and best point."""
    plan = load_plan(store, name)
    rows = {r.key: r for r in store.rows(name)}
    groups, measured, total = [], 0, 0
    for g in plan.groups:
        points = []
        for c in g.configs:
            row = rows.get(canonical_key(c))
            total += 1
            measured += row is not None
            points.append(
                {
                    "x": c.get(g.x),
                    "config": c,
                    "label": describe(c),
                    "value": None if row is None else row.value,
                    "metrics": None if row is None else row.metrics,
                    "seconds": None if row is None else row.info.get("seconds"),
                    "thumbnails": None if row is None else row.info.get("thumbnails"),
                }
            )
        done = [p for p in points if p["value"] is not None]
        pick = max if direction_of(plan.metric) == "maximize" else min
        best = pick(done, key=lambda p: p["value"]) if done else None
        groups.append({"label": g.label, "panel": g.panel, "x": g.x, "points": points, "best": best})
    summary = {
        "experiment": plan.name,
        "metric": plan.metric,
        "notes": plan.notes,
        "measured": measured,
        "configurations": total,
        "groups": groups,
    }
    return plan, summary


def markdown(summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    lines = [
        f"# {summary['experiment']}: {metric} "
        f"({'higher' if direction_of(metric) == 'maximize' else 'lower'} is better)",
        "",
        f"{summary['measured']} of {summary['configurations']} configurations measured.",
        "",
        f"| panel | group | best settings | {metric} | ratio to baseline | other metrics | points |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    baseline: dict[str, float] = {}
    for g in summary["groups"]:
        best = g["best"]
        n_done = sum(p["value"] is not None for p in g["points"])
        if best is None:
            lines.append(f"| {g['panel']} | {g['label']} | - | - | - | - | 0/{len(g['points'])} |")
            continue
        base = baseline.setdefault(g["panel"], best["value"])
        ratio = best["value"] / base if base else math.nan
        others = ", ".join(
            f"{k} {v:.3g}"
            for k, v in sorted(best["metrics"].items())
            if k != metric and _number(v) is not None and not k.endswith(("_s", "labelled"))
        )
        lines.append(
            f"| {g['panel']} | {g['label']} | {best['label']} | {best['value']:.4g} | {ratio:.3f} | "
            f"{others or '-'} | {n_done}/{len(g['points'])} |"
        )
    lines += ["", "All measured points:", "", f"| panel | group | settings | {metric} | other metrics |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for g in summary["groups"]:
        for p in g["points"]:
            if p["value"] is None:
                continue
            others = ", ".join(
                f"{k} {v:.3g}"
                for k, v in sorted(p["metrics"].items())
                if k != metric and _number(v) is not None and not k.endswith(("_s", "labelled"))
            )
            lines.append(
                f"| {g['panel']} | {g['label']} | {p['label']} | {p['value']:.4g} | {others or '-'} |"
            )
    if summary.get("notes"):
        lines += ["", *(f"- {k}: {v}" for k, v in summary["notes"].items())]
    return "\n".join(lines) + "\n"


def _plot_panel(path: Path, panel: str, groups: list[dict], metric: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    xs_all = [p["x"] for g in groups for p in g["points"] if _number(p["x"]) is not None]
    for i, g in enumerate(groups):
        envelope: dict[float, float] = {}  # the best over the other swept fields at each x
        for p in g["points"]:
            if p["value"] is not None and _number(p["x"]) is not None:
                x = float(p["x"])
                envelope[x] = min(envelope.get(x, math.inf), p["value"])
        pts = sorted(envelope.items())
        color = f"C{i % 10}"
        if len(g["points"]) == 1 and g["best"] is not None:
            ax.axhline(g["best"]["value"], color=color, linestyle="--", label=g["label"])
            continue
        if not pts:
            continue
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, "o-", color=color, label=g["label"], markersize=4)
        best = np.argmax if direction_of(metric) == "maximize" else np.argmin
        j = int(best(y))
        ax.plot([x[j]], [y[j]], "*", color=color, markersize=11)
    if xs_all:
        ax.set_xlabel(groups[0]["x"].replace("_", " "))
        if all(float(v) > 0 for v in xs_all) and max(xs_all) / min(xs_all) > 8:
            ax.set_xscale("log")
    ax.set_ylabel(metric)
    ax.set_title(panel or "all")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic.write_with(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def _first_seed_grid(groups: list[dict]) -> np.ndarray | None:
    """The first seed's image at every measured point: a row per group, columns by x (Figures 4-6)."""
    rows = []
    for g in groups:
        pts = [p for p in g["points"] if p["thumbnails"] and _number(p["x"]) is not None]
        if len(pts) > 1:
            pts.sort(key=lambda p: float(p["x"]))
            rows.append([read_thumbnails(p["thumbnails"])[0] for p in pts])
    if not rows:
        return None
    width = max(len(r) for r in rows)
    blank = np.full_like(rows[0][0], 255)
    return np.stack([np.stack(r + [blank] * (width - len(r))) for r in rows])


def write_report(store: ResultStore, name: str, out_dir: str | Path) -> dict[str, Any]:
    """Write NAME.json, NAME.md and the PNGs into out_dir from the store; return the summary."""
    out = Path(out_dir)
    plan, summary = collect(store, name)
    files = []
    panels: dict[str, list[dict]] = {}
    for g in summary["groups"]:
        panels.setdefault(g["panel"], []).append(g)
    for panel, groups in panels.items():
        path = out / f"{name}-{_slug(panel)}.png"
        _plot_panel(path, panel, groups, plan.metric)
        files.append(path.name)
    strips = [
        read_thumbnails(g["best"]["thumbnails"])
        for g in summary["groups"]
        if g["best"] and g["best"]["thumbnails"]
    ]
    if strips:
        k = min(len(s) for s in strips)
        path = out / f"{name}-images.png"
        save_png(path, make_grid(np.stack([s[:k] for s in strips])))
        files.append(path.name)
    cells = _first_seed_grid(summary["groups"])
    if cells is not None:
        path = out / f"{name}-grid.png"
        save_png(path, make_grid(cells))
        files.append(path.name)
    atomic.write_text(out / f"{name}.md", markdown(summary))
    slim = {**summary, "files": files}
    slim["groups"] = [
        {
            **g,
            "points": [{k: v for k, v in p.items() if k != "thumbnails"} for p in g["points"]],
            "best": None if g["best"] is None else {k: v for k, v in g["best"].items() if k != "thumbnails"},
        }
        for g in summary["groups"]
    ]
    atomic.write_json(out / f"{name}.json", slim)
    return slim
