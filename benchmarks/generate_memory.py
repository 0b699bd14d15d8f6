"""Peak memory of `autoguidance generate` against the number of seeds: flat, since each batch's PNGs are
written as soon as they are made (nothing holds every image).

    python benchmarks/generate_memory.py --seeds 100,2000 --out benchmarks/results/generate_memory.json

A random 64x64 RGB network (preset xxs, untrained: the cost of a sample does not depend on the weights)
generates each seed count into a fresh folder in its own process, timed by /usr/bin/time (its maximum
resident set size, the process's peak memory). Holding every image would add 12 KiB per seed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoguidance.io import atomic
from autoguidance.io.networks import save_network
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config


def peak_kib(cmd: list[str]) -> tuple[int, float]:
    """(maximum resident set size in KiB, wall seconds) of one command."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, check=True)
    return int(done.stderr.strip().splitlines()[-1]), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100,2000")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/generate_memory.json")
    args = parser.parse_args()
    counts = [int(n) for n in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = Path(tmp) / "net.safetensors"
        save_network(net, build(preset_config("xxs", 64, 3, 10)))
        rows = []
        for n in counts:
            cmd = [sys.executable, "-m", "autoguidance", "generate", "--net", str(net)]
            cmd += ["--seeds", f"0-{n - 1}", "--steps", str(args.steps), "--batch", str(args.batch)]
            cmd += ["--device", "cpu", "--no-progress"]
            kib, wall = peak_kib([*cmd, "--out", str(Path(tmp) / f"out{n}")])
            rows.append({"seeds": n, "peak_rss_mib": round(kib / 1024, 1), "wall_s": round(wall, 1)})
            print(f"{n:6d} seeds: peak {kib / 1024:.1f} MiB, {wall:.1f} s")
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    result = {"rows": rows, "steps": args.steps, "batch": args.batch, "threads": threads}
    atomic.write_json(args.out, result)


if __name__ == "__main__":
    main()
