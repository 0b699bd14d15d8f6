"""Render the demo's figures (run_toy with figures) for a recipe on model seed 0, its models taken from the
research cache (as shipped weights would be), and time the demo path without training.

    python benchmarks/toy_recipe/figure.py --label rec-w2.5 --main 4096:4096:0.02 \
        --guide 64:512:0.01:4096::same --uncond 32:512:0.01:2048 --w 2.5 [--cfg 4 --trunc 1.4]

Writes out/research/figure/NAME/{figure1,figure2,figure9}.png and metrics.json, copies figure1.png to
benchmarks/results/toy_recipe/figure1-NAME.png and the timings to
benchmarks/results/toy_recipe/figure-NAME.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lib  # noqa: E402
from screen import parse_guide, parse_main  # noqa: E402

from autoguidance.toy.experiment import ToySettings, run_toy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--main", required=True)
    ap.add_argument("--guide", required=True)
    ap.add_argument("--uncond", default="32:512:0.01:2048")
    ap.add_argument("--w", type=float, required=True)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--trunc", type=float, default=1.4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfgs = {
        "main": lib.main_cfg(a.seed, **parse_main(a.main)),
        "guide": lib.guide_cfg(a.seed, **parse_guide(a.guide)),
        "uncond": lib.uncond_cfg(
            a.seed, **{k: v for k, v in parse_guide(a.uncond).items() if k != "same_seed"}
        ),
    }
    folder = lib.OUT / "figure" / a.label
    (folder / "models").mkdir(parents=True, exist_ok=True)
    for name, cfg in cfgs.items():
        lib.get_model(cfg)
        shutil.copyfile(
            lib.OUT / "models" / lib.tag(cfg) / "models" / "m.safetensors",
            folder / "models" / f"{name}.safetensors",
        )
    settings = ToySettings(
        guidance=a.w,
        cfg_guidance=a.cfg,
        truncation=a.trunc,
        device="cpu",
        models={k: v.to_dict() for k, v in cfgs.items()},
        model_seed=a.seed,
    )
    start = time.perf_counter()
    m = run_toy(settings, folder, progress=False, figures=True)
    wall = time.perf_counter() - start
    shutil.copyfile(folder / "figure1.png", lib.RESULTS / f"figure1-{a.label}.png")
    lib.atomic.write_json(
        lib.RESULTS / f"figure-{a.label}.json",
        {
            "args": vars(a),
            "wall_seconds_run_toy_1_thread_models_loaded": wall,
            "timings": m["timings"],
            "methods": m["methods"],
            "models": m["models"],
        },
    )
    print(f"run_toy with stored models: {wall:.1f} s wall at 1 thread; timings {m['timings']}")


if __name__ == "__main__":
    main()
