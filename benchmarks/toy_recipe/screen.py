"""Screen (main, guide) pairs: autoguidance's metrics over w for each guide, per model seed, resumable.

    python benchmarks/toy_recipe/screen.py --main 4096:4096:0.02 --seeds 0-2 \
        --guides 16:512:0.01,24:512:0.01 --weights 1.5,2,2.5,3 --samples 16384

--main ITERATIONS:BATCH:LR[:EMA]; each guide WIDTH:ITERATIONS:EMA[:BATCH[:LR[:same]]] ("same": the guide
trains with the main model's seed). Writes benchmarks/results/toy_recipe/raw/<main tag>/<guide tag>-n<N>.json
(one entry per w, each written as soon as it is measured) and unguided-n<N>.json; reruns skip what exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lib  # noqa: E402  (sets the thread counts first)

from autoguidance.io import atomic  # noqa: E402
from autoguidance.seeds import parse_seeds  # noqa: E402


def parse_main(text: str) -> dict:
    p = text.split(":")
    d = {"iterations": int(p[0]), "batch": int(p[1]), "lr": float(p[2])}
    if len(p) > 3:
        d["ema"] = float(p[3])
    return d


def parse_guide(text: str) -> dict:
    p = text.split(":")
    d = {"width": int(p[0]), "iterations": int(p[1]), "ema": float(p[2])}
    if len(p) > 3 and p[3]:
        d["batch"] = int(p[3])
    if len(p) > 4 and p[4]:
        d["lr"] = float(p[4])
    if len(p) > 5 and p[5] == "same":
        d["same_seed"] = True
    return d


def guide_label(cfg) -> str:
    return lib.tag(cfg).split("-s")[0]  # the guide's tag without its seed (which follows the model seed)


def run(main_spec: dict, guide_specs: list[dict], seeds, weights, n: int, ev: lib.Evaluator) -> None:
    for seed in seeds:
        mcfg = lib.main_cfg(seed, **main_spec)
        folder = lib.RESULTS / "raw" / lib.tag(mcfg)
        t = time.perf_counter()
        main, mmeta = lib.get_model(mcfg)
        print(
            f"seed {seed} main {lib.tag(mcfg)}: loss {mmeta['heldout_loss']:.4f} gain {main.gain.item():+.3f}"
            f" train {mmeta.get('train_seconds', 0):.0f} s (got in {time.perf_counter() - t:.0f} s)",
            flush=True,
        )
        upath = folder / f"unguided-n{n}.json"
        if not upath.exists():
            m = ev.measure({"main": main}, "unguided", 1.0, n)
            atomic.write_json(
                upath, {"main": mcfg.to_dict(), "main_meta": _meta(mmeta), "samples": n, "metrics": m}
            )
        u = lib.read_json(upath)["metrics"]
        for gs in guide_specs:
            gcfg = lib.guide_cfg(seed, **gs)
            path = folder / f"{guide_label(gcfg)}{'-same' if gs.get('same_seed') else ''}-n{n}.json"
            res = lib.read_json(path) or {
                "main": mcfg.to_dict(),
                "guide": gcfg.to_dict(),
                "samples": n,
                "unguided": u,
                "w": {},
            }
            todo = [w for w in weights if f"{w:g}" not in res["w"]]
            if not todo:
                continue
            guide, gmeta = lib.get_model(gcfg)
            res["guide_meta"] = _meta(gmeta)
            res["main_meta"] = _meta(mmeta)
            for w in todo:
                res["w"][f"{w:g}"] = ev.measure({"main": main, "guide": guide}, "autoguidance", w, n)
                atomic.write_json(path, res)
            line = " ".join(
                f"w{k}:{100 * (1 - v['outlier_fraction'] / u['outlier_fraction']):+.0f}%/"
                f"d{v['depth_tv']:.3f}/o{v['outer_depth_ratio']:.2f}/r{v['recall']:.3f}"
                for k, v in sorted(res["w"].items(), key=lambda kv: float(kv[0]))
            )
            print(
                f"  seed {seed} guide {path.stem} loss {gmeta['heldout_loss']:.4f} gain "
                f"{guide.gain.item():+.2f}"
                f" train {gmeta.get('train_seconds', 0):.0f}s | unguided {u['outlier_fraction']:.4f}"
                f" r{u['recall']:.3f} | {line}",
                flush=True,
            )


def _meta(meta: dict) -> dict:
    return {
        k: meta.get(k) for k in ("heldout_loss", "final_loss", "train_seconds", "load_1min", "file_bytes")
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--main", default="2048:2048:0.02")
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--guides", required=True)
    ap.add_argument("--weights", default="1.5,2,2.5,3")
    ap.add_argument("--samples", type=int, default=16384)
    a = ap.parse_args()
    ev = lib.Evaluator()
    run(
        parse_main(a.main),
        [parse_guide(g) for g in a.guides.split(",")],
        parse_seeds(a.seeds),
        [float(w) for w in a.weights.split(",")],
        a.samples,
        ev,
    )


if __name__ == "__main__":
    main()
