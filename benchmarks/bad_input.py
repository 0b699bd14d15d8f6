"""Wall time of every command's answer to an output it cannot write, as a user meets it (a fresh process:
Python, torch and the CLI load, then the checks refuse before any work).

    python benchmarks/bad_input.py --out benchmarks/results/bad_input.json

The cases are the tests' (tests/cli/test_errors_before_work.py): a file where a folder goes, a path under
/proc, and a folder this user cannot write into (immutable for root). Each must exit 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from autoguidance.io import atomic

TRAIN = ["train", "--dataset", "digits", "--preset", "xxs", "--uncond", "--batch", "8", "--device", "cpu"]
TRAIN += ["--no-progress", "--duration", "16"]


def inputs(folder: Path) -> dict[str, str]:
    """Valid inputs for every command: a tiny trained run, two images, a sweep file, an EDM2-format file,
    an (empty) pipeline folder."""
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "autoguidance", *TRAIN, "--out", str(run)], check=True)
    (folder / "images").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / "images" / f"{i}.png")
    net = str(run / "network-final.safetensors")
    (folder / "sweep.json").write_text(
        json.dumps({"name": "s", "fixed": {"kind": "none", "main_run": net}, "grid": {"main_ema": [0.1]}})
    )
    (folder / "net.pkl").write_bytes(b"\x80\x04N.")  # a pickle; convert refuses the output first
    (folder / "pipeline").mkdir()
    names = {"images": "images", "sweep": "sweep.json", "pkl": "net.pkl", "pipeline": "pipeline"}
    return {"run": str(run), "net": net, **{k: str(folder / v) for k, v in names.items()}}


def commands(i: dict[str, str]) -> dict[str, tuple[list[str], str, str]]:
    return {
        "train": (TRAIN, "--out", "folder"),
        "generate": (["generate", "--net", i["net"], "--seeds", "0-1"], "--out", "folder"),
        "evaluate": (["evaluate", "--images", i["images"], "--metrics", "classes"], "--out", "file"),
        "phema": (["phema", "--run", i["run"], "--sigma-rel", "0.07"], "--out", "folder"),
        "toy": (["toy", "--no-progress"], "--out", "folder"),
        "toy-sweep": (["toy-sweep", "--no-progress"], "--out", "folder"),
        "toy-plot": (["toy-plot"], "--out", "folder"),
        "experiment": (["experiment", "table1"], "--out", "folder"),
        "sweep": (["sweep", i["sweep"]], "--store", "file"),
        "tune": (["tune", "--main-run", i["run"], "--guide-run", i["run"]], "--store", "file"),
        "convert": (["convert", i["pkl"]], "", "file"),
        "generate-diffusers": (["generate-diffusers", "--model", i["pipeline"]], "--out", "folder"),
        "generate-text": (
            ["generate-text", "--model", i["pipeline"], "--prompt", "a cat"],
            "--out",
            "folder",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/bad_input.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        given = inputs(folder)
        (folder / "taken").write_text("a file")
        locked = folder / "locked"
        locked.mkdir()
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(locked)], check=True)
        else:
            locked.chmod(0o500)
        try:
            for name, (before, flag, kind) in commands(given).items():
                leaf = "out.safetensors" if kind == "file" else "out"
                for where, out in (
                    ("a file as a folder", folder / "taken" / (leaf if kind == "file" else "")),
                    ("under /proc", Path("/proc/autoguidance-nope") / leaf),
                    ("an unwritable folder", locked / leaf),
                ):
                    argv = [*before, *([flag, str(out)] if flag else [str(out)])]
                    t0 = time.perf_counter()
                    done = subprocess.run(
                        [sys.executable, "-m", "autoguidance", *argv], capture_output=True, text=True
                    )
                    wall = time.perf_counter() - t0
                    line = done.stderr.strip()
                    row = {"command": name, "case": where, "exit": done.returncode, "wall_s": round(wall, 2)}
                    rows.append({**row, "lines": len(line.splitlines()), "message": line})
                    print(f"{name:18s} {where:22s} exit {done.returncode}  {wall:5.2f} s  {line[:90]}")
        finally:
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(locked)])
    walls = [r["wall_s"] for r in rows]
    one_line = all(r["exit"] == 2 and r["lines"] == 1 for r in rows)
    summary = {"cases": len(rows), "all_exit_2_one_line": one_line, "wall_s_max": max(walls)}
    summary["wall_s_median"] = sorted(walls)[len(walls) // 2]
    print(json.dumps(summary))
    atomic.write_json(args.out, {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
