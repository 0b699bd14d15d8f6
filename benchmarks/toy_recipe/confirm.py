"""Confirm a candidate recipe on model seeds 0-4 through the package's own pipeline (`run_toy`, all five
methods, 16,384 samples), then autoguidance at extra weights for the trade-off.

    python benchmarks/toy_recipe/confirm.py --label NAME --main 4096:4096:0.02 --guide 48:512:0.01 \
        --uncond 32:512:0.01:2048 --w 2.5 --extra-w 1.5,2,2.5,3,3.5 [--cfg 4 --trunc 1.4] [--seeds 0-4]

Models come from the research cache (lib.get_model: trained at one thread on first use, wall time
recorded) and are copied into out/research/confirm/NAME/SEED/models, where run_toy finds them. Writes
benchmarks/results/toy_recipe/confirm-NAME.json: per seed the run's metrics.json (methods, models), the
training seconds and file sizes, the extra autoguidance points; and the spread over seeds of every metric.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lib  # noqa: E402
from screen import parse_guide, parse_main  # noqa: E402

from autoguidance.io import atomic  # noqa: E402
from autoguidance.seeds import parse_seeds  # noqa: E402
from autoguidance.toy.experiment import ToySettings, run_toy  # noqa: E402

METRICS = lib.METRICS


def summary(runs: dict) -> dict:
    out = {"methods": {}, "reduction": {}, "models": {}}
    first = next(iter(runs.values()))
    for method in first["methods"]:
        out["methods"][method] = {
            k: lib.spread([r["methods"][method][k] for r in runs.values()]) for k in METRICS
        }
    out["reduction"]["autoguidance"] = lib.spread([r["reduction"] for r in runs.values()])
    for name in first["models"]:
        out["models"][name] = {
            k: lib.spread([r["models"][name][k] for r in runs.values()])
            for k in ("heldout_loss", "train_seconds", "file_bytes")
        }
    extra = {}
    for w in first["extra"]:
        pts = [r["extra"][w] for r in runs.values()]
        red = [
            1 - p["outlier_fraction"] / r["methods"]["unguided"]["outlier_fraction"]
            for p, r in zip(pts, runs.values(), strict=True)
        ]
        extra[w] = {"reduction": lib.spread(red), **{k: lib.spread([p[k] for p in pts]) for k in METRICS}}
    out["extra"] = extra
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--main", required=True)
    ap.add_argument("--guide", required=True)
    ap.add_argument("--uncond", default="32:512:0.01:2048")
    ap.add_argument("--w", type=float, required=True)
    ap.add_argument("--extra-w", default="1.5,2,2.5,3,3.5")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--trunc", type=float, default=1.4)
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--samples", type=int, default=16384)
    a = ap.parse_args()
    path = lib.RESULTS / f"confirm-{a.label}.json"
    done = (lib.read_json(path) or {}).get("runs", {})
    ev = lib.Evaluator()
    runs = {}
    for seed in parse_seeds(a.seeds):
        cfgs = {
            "main": lib.main_cfg(seed, **parse_main(a.main)),
            "guide": lib.guide_cfg(seed, **parse_guide(a.guide)),
            "uncond": lib.uncond_cfg(
                seed, **{k: v for k, v in parse_guide(a.uncond).items() if k != "same_seed"}
            ),
        }
        if str(seed) in done:
            runs[str(seed)] = done[str(seed)]
            continue
        folder = lib.OUT / "confirm" / a.label / str(seed)
        (folder / "models").mkdir(parents=True, exist_ok=True)
        info, models = {}, {}
        for name, cfg in cfgs.items():
            models[name], meta = lib.get_model(cfg)
            info[name] = {
                "train_seconds": meta.get("train_seconds"),
                "file_bytes": meta["file_bytes"],
                "load_1min": meta.get("load_1min"),
            }
            src = lib.OUT / "models" / lib.tag(cfg) / "models" / "m.safetensors"
            shutil.copyfile(src, folder / "models" / f"{name}.safetensors")
        settings = ToySettings(
            guidance=a.w,
            cfg_guidance=a.cfg,
            truncation=a.trunc,
            samples=a.samples,
            device="cpu",
            models={k: v.to_dict() for k, v in cfgs.items()},
        )
        m = run_toy(settings, folder, progress=False, figures=False)
        for name in info:
            m["models"][name].update(info[name])
        u = m["methods"]["unguided"]["outlier_fraction"]
        extra = {
            f"{w:g}": ev.measure(
                {"main": models["main"], "guide": models["guide"]}, "autoguidance", w, a.samples
            )
            for w in (float(x) for x in a.extra_w.split(","))
        }
        runs[str(seed)] = {
            "methods": m["methods"],
            "models": m["models"],
            "timings": m["timings"],
            "reduction": 1 - m["methods"]["autoguidance"]["outlier_fraction"] / u,
            "extra": extra,
        }
        a_ = m["methods"]["autoguidance"]
        print(
            f"seed {seed}: unguided {u:.4f} -> {a_['outlier_fraction']:.4f} "
            f"({100 * runs[str(seed)]['reduction']:.0f}%)"
            f" depth TV {a_['depth_tv']:.3f} outer {a_['outer_depth_ratio']:.2f} recall {a_['recall']:.3f}"
            f" branch TV {a_['branch_tv']:.3f}",
            flush=True,
        )
        atomic.write_json(path, {"label": a.label, "args": vars(a), "runs": runs})
    result = {
        "label": a.label,
        "args": vars(a),
        "configs": {k: v.to_dict() for k, v in cfgs.items()},
        "runs": runs,
        "summary": summary(runs),
    }
    atomic.write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
