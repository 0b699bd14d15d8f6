"""Markdown tables for REPORT.md from benchmarks/results/toy_recipe (no sampling): the seeds table of a
confirm run, the screening trade-off (per main recipe and guide, over w, all seeds measured) and the fronts
at equal outliers.

    python benchmarks/toy_recipe/tables.py > benchmarks/results/toy_recipe/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import summarize  # noqa: E402

RES = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "toy_recipe"
METRICS = [
    ("outlier_fraction", "outliers", 4),
    ("depth_tv", "depth TV", 3),
    ("outer_depth_ratio", "outer ratio", 2),
    ("recall", "recall", 3),
    ("recall_outer", "recall outer", 3),
    ("branch_tv", "branch TV", 3),
    ("within_depth_tv", "within-depth TV", 3),
]


def seeds_table(label: str) -> str:
    d = json.loads((RES / f"confirm-{label}.json").read_text())
    runs, s = d["runs"], d["summary"]
    lines = [
        f"### confirm-{label}: {d['args']['main']} main, guide {d['args']['guide']}, uncond "
        f"{d['args']['uncond']}, "
        f"w = {d['args']['w']:g}, CFG w = {d['args']['cfg']:g}, truncation x{d['args']['trunc']:g}; "
        f"{d['args']['samples']} samples",
        "",
    ]
    head = (
        "| seed | unguided outliers | autoguided outliers | reduction | "
        + " | ".join(n for _, n, _ in METRICS[1:])
        + " | main loss | guide loss |"
    )
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]

    def row(name, u, a, red, models):
        cells = [name, f"{u:.4f}", f"{a['outlier_fraction']:.4f}", f"{100 * red:.1f}%"]
        cells += [f"{a[k]:.{p}f}" for k, _, p in METRICS[1:]]
        cells += [models[0], models[1]]
        return "| " + " | ".join(cells) + " |"

    for seed, r in runs.items():
        a = r["methods"]["autoguidance"]
        lines.append(
            row(
                seed,
                r["methods"]["unguided"]["outlier_fraction"],
                a,
                r["reduction"],
                (f"{r['models']['main']['heldout_loss']:.4f}", f"{r['models']['guide']['heldout_loss']:.4f}"),
            )
        )
    for stat in ("mean", "min", "max"):
        a = {k: s["methods"]["autoguidance"][k][stat] for k, _, _ in METRICS}
        lines.append(
            row(
                f"**{stat}**",
                s["methods"]["unguided"]["outlier_fraction"][stat],
                a,
                s["reduction"]["autoguidance"][stat],
                (
                    f"{s['models']['main']['heldout_loss'][stat]:.4f}",
                    f"{s['models']['guide']['heldout_loss'][stat]:.4f}",
                ),
            )
        )
    lines += [
        "",
        "All methods, mean (min-max) over the seeds:",
        "",
        "| method | " + " | ".join(n for _, n, _ in METRICS) + " |",
        "|" + " --- |" * (len(METRICS) + 1),
    ]
    for method, m in s["methods"].items():
        lines.append(
            f"| {method} | "
            + " | ".join(
                f"{m[k]['mean']:.{p}f} ({m[k]['min']:.{p}f}-{m[k]['max']:.{p}f})" for k, _, p in METRICS
            )
            + " |"
        )
    lines += [
        "",
        "Autoguidance at other w (same models), mean (min-max):",
        "",
        "| w | reduction | depth TV | outer ratio | recall | branch TV |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w, e in sorted(s["extra"].items(), key=lambda kv: float(kv[0])):
        lines.append(
            f"| {w} | {100 * e['reduction']['mean']:.1f}% ({100 * e['reduction']['min']:.0f}-"
            f"{100 * e['reduction']['max']:.0f}%) | {e['depth_tv']['mean']:.3f} (max "
            f"{e['depth_tv']['max']:.3f}) | "
            f"{e['outer_depth_ratio']['min']:.2f}-{e['outer_depth_ratio']['max']:.2f} | "
            f"{e['recall']['mean']:.3f} (min {e['recall']['min']:.3f}) | {e['branch_tv']['mean']:.3f} |"
        )
    lines += ["", "Training wall time at one thread (s) and file size (bytes), mean (min-max):", ""]
    for name, m in s["models"].items():
        t, b = m["train_seconds"], m["file_bytes"]
        lines.append(f"- {name}: {t['mean']:.0f} s ({t['min']:.0f}-{t['max']:.0f}); {b['mean']:.0f} bytes")
    return "\n".join(lines)


def tradeoff_table(main_filter: str, min_seeds: int) -> str:
    rows = summarize.rows(summarize.collect(16384), min_seeds)
    lines = [
        "| guide (width-iterations-batch-lr-EMA) | w | seeds | reduction mean (min-max) | per seed | depth "
        "TV max | "
        "outer ratio range | recall min | branch TV mean | fails |",
        "|" + " --- |" * 10,
    ]
    fails_name = ["min<30%", "mean<35%", "depthTV>0.08", "outer ratio", "recall<0.70"]
    for x in rows:
        if main_filter not in x["main"]:
            continue
        g = x["guide"].replace("A-", "").replace("-tref512", "").replace("-wu0", "").replace("-g-0.1", "")
        red = x["reduction"]
        fails = [n for n, ok in zip(fails_name, x["targets"].values(), strict=True) if not ok]
        lines.append(
            f"| {g} | {x['w']:g} | {len(x['seeds'])} | {100 * red['mean']:.1f}% ({100 * red['min']:.0f}-"
            f"{100 * red['max']:.0f}%) | {', '.join(f'{100 * v:.0f}' for v in red['per_seed'])} | "
            f"{x['depth_tv']['max']:.3f} | "
            f"{x['outer_depth_ratio']['min']:.2f}-{x['outer_depth_ratio']['max']:.2f} | "
            f"{x['recall']['min']:.3f} | {x['branch_tv']['mean']:.3f} | "
            f"{'**all hold**' if not fails else ', '.join(fails)} |"
        )
    return "\n".join(lines)


def front_table(label: str) -> str:
    d = json.loads((RES / f"front-{label}.json").read_text())
    lines = [
        f"### front-{label} (unguided: outliers {d['unguided']['outlier_fraction']:.4f}, depth TV "
        f"{d['unguided']['depth_tv']:.3f}, recall {d['unguided']['recall']:.3f})",
        "",
    ]
    for name, rows in d.get("equal_outliers", {}).items():
        lines += [
            f"At autoguidance's outlier level, {name} needs:",
            "",
            "| AG w | outliers | AG depth TV | other's strength | other depth TV | AG recall | other recall "
            "| "
            "AG recall outer | other recall outer | AG branch TV | other branch TV | AG outer ratio | other "
            "outer ratio |",
            "|" + " --- |" * 13,
        ]
        for r in rows:
            o = r["other"]
            if o is None:
                lines.append(
                    f"| {r['w']:g} | {r['outliers']:.4f} | {r['depth_tv']:.3f} | never this few | | "
                    f"{r['recall']:.3f} | | {r['recall_outer']:.3f} | | {r['branch_tv']:.3f} | | "
                    f"{r['outer_depth_ratio']:.2f} | |"
                )
            else:
                lines.append(
                    f"| {r['w']:g} | {r['outliers']:.4f} | {r['depth_tv']:.3f} | {o['w']:.3f} | "
                    f"{o['depth_tv']:.3f} | "
                    f"{r['recall']:.3f} | {o['recall']:.3f} | {r['recall_outer']:.3f} | "
                    f"{o['recall_outer']:.3f} | "
                    f"{r['branch_tv']:.3f} | {o['branch_tv']:.3f} | {r['outer_depth_ratio']:.2f} | "
                    f"{o['outer_depth_ratio']:.2f} |"
                )
        lines.append("")
    return "\n".join(lines)


def front_summary() -> str:
    """Over the seeds' fronts: at autoguidance's outliers for w = 2, 2.5, 3, what truncation and the best CFG
    (unconditional model 64:512:0.01:4096) need, mean over seeds (count of seeds where they get that few)."""
    files = sorted(RES.glob("front-rec-seed*.json"))
    ds = [json.loads(f.read_text()) for f in files]
    keys = ("depth_tv", "recall", "recall_outer", "branch_tv", "outer_depth_ratio")
    lines = [
        f"Fronts of the recommended pair on {len(ds)} model seeds ({', '.join(f.stem[-5:] for f in files)}), "
        "16,384 samples: at autoguidance's outlier fraction, the other method's metrics interpolated along "
        "its "
        "curve (mean over the seeds where it gets that few outliers).",
        "",
        "| AG w | AG outliers | method | seeds reaching | strength | depth TV (AG / other) | recall (AG / "
        "other) | "
        "recall outer (AG / other) | branch TV (AG / other) | outer ratio (AG / other) |",
        "|" + " --- |" * 10,
    ]
    for w in (2.0, 2.5, 3.0):
        for name in ("truncation", "cfg[64:512:0.01:4096]"):
            ag, ot = [], []
            for d in ds:
                for r in d["equal_outliers"][name]:
                    if r["w"] == w:
                        ag.append(r)
                        if r["other"] is not None:
                            ot.append((r, r["other"]))
            m = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
            cells = [
                f"{w:g}",
                f"{m([r['outliers'] for r in ag]):.4f}",
                name,
                f"{len(ot)}/{len(ag)}",
                f"{m([o['w'] for _, o in ot]):.3f}",
            ]
            for k in keys:
                cells.append(
                    f"{m([r[k] for r, _ in ot]):.3f} / {m([o[k] for _, o in ot]):.3f}" if ot else "-"
                )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    out = ["# Generated tables (benchmarks/toy_recipe/tables.py)", ""]
    if (RES / "confirm-rec.json").exists():
        out += ["## Seeds table of the recommended recipe", "", seeds_table("rec"), ""]
    out += [
        "## Screening: paper-length main (4096 x 4096, lr 2e-2, gain -0.1), all guides with >= 3 seeds",
        "",
        tradeoff_table("it4096-b4096", 3),
        "",
    ]
    out += [
        "## Screening: half-batch main (4096 x 2048, lr 2e-2), 3 seeds",
        "",
        tradeoff_table("it4096-b2048", 3),
        "",
    ]
    out += [
        "## Screening: current default main (2048 x 2048, lr 2e-2), 3 seeds",
        "",
        tradeoff_table("it2048-b2048", 3),
        "",
    ]
    out += ["## Fronts over seeds", "", front_summary(), ""]
    for f in sorted(RES.glob("front-*.json")):
        out += [front_table(f.stem[len("front-") :]), ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
