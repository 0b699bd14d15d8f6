"""Is training bit-for-bit reproducible? Retrain configs in fresh processes under given thread settings and
compare the files' tensors (and sha256 of the tensor bytes) with the research cache's copies.

    python benchmarks/toy_recipe/repro.py guide          # the recommended guide (35 s), vs the cache
    python benchmarks/toy_recipe/repro.py main           # the recommended main, seed 0 (about 5 min)
    python benchmarks/toy_recipe/repro.py default-guide  # the current default guide (11 s), vs the cache

All at 1 thread.

Writes benchmarks/results/toy_recipe/repro.json (merged over calls).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
CHILD = r"""
import os, sys, json, time, hashlib
import torch
torch.set_num_threads(int(os.environ["TORCH_THREADS"]))
sys.path.insert(0, sys.argv[1])
from autoguidance.toy.train import ToyTrainConfig, train_toy_model
from autoguidance.toy.checkpoint import save_toy_model
d = json.loads(sys.argv[2]); d["classes"] = tuple(d["classes"])
cfg = ToyTrainConfig(**d)
t = time.perf_counter()
model, _ = train_toy_model(cfg)
secs = time.perf_counter() - t
save_toy_model(sys.argv[3], model, {"training": cfg.to_dict()})
sd = model.state_dict()
h = hashlib.sha256(b"".join(sd[k].detach().cpu().numpy().tobytes() for k in sorted(sd))).hexdigest()
print(json.dumps({"sha256_tensors": h, "seconds": secs}))
"""


def tensor_hash(path: Path) -> str:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    return hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest()


def retrain(cfg, torch_threads: int, numba_threads: int) -> dict:
    env = {
        **os.environ,
        "TORCH_THREADS": str(torch_threads),
        "NUMBA_NUM_THREADS": str(numba_threads),
        "OMP_NUM_THREADS": str(torch_threads),
        "MKL_NUM_THREADS": str(torch_threads),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.safetensors"
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(HERE), json.dumps(cfg.to_dict()), str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["file_bytes"] = out.stat().st_size
    return {**res, "torch_threads": torch_threads, "numba_threads": numba_threads}


def main() -> None:
    sys.path.insert(0, str(HERE))
    import lib

    what = sys.argv[1]
    path = lib.RESULTS / "repro.json"
    results = lib.read_json(path) or {}
    if what in ("guide", "main"):
        cfg = (
            lib.guide_cfg(0, width=64, iterations=512, batch=4096, same_seed=True)
            if what == "guide"
            else lib.main_cfg(0, iterations=4096, batch=4096)
        )
        lib.get_model(cfg)
        cached = lib.OUT / "models" / lib.tag(cfg) / "models" / "m.safetensors"
        fresh = retrain(cfg, 1, 1)
        results[what] = {
            "config": cfg.to_dict(),
            "cached_sha256_tensors": tensor_hash(cached),
            "cached_file_bytes": cached.stat().st_size,
            "fresh": fresh,
            "identical": tensor_hash(cached) == fresh["sha256_tensors"],
        }
    elif what == "default-guide":
        cfg = lib.guide_cfg(0)  # the current default guide, 11 s
        cached = lib.OUT / "models" / lib.tag(cfg) / "models" / "m.safetensors"
        fresh = retrain(cfg, 1, 1)
        results[what] = {
            "config": cfg.to_dict(),
            "cached_sha256_tensors": tensor_hash(cached),
            "fresh": fresh,
            "identical": tensor_hash(cached) == fresh["sha256_tensors"],
        }
    lib.atomic.write_json(path, results)
    print(json.dumps(results[what], indent=1))


if __name__ == "__main__":
    main()
