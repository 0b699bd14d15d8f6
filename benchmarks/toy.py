"""Time the toy reproduction stage by stage in a fresh folder, and its two hot spots.

    python benchmarks/toy.py [--quick] [--retrain] [--out DIR] [--threads N]

This is what `make demo` runs (the shipped models, five methods, metrics, Figures 1, 2 and 9);
--retrain trains the three models first (what `autoguidance toy --retrain` does); --threads 1 measures
it on one core, as on a busy shared machine.

Prints a table and writes benchmarks/results/toy.json (toy-retrain.json with --retrain). For scale: the
paper's reference code trains the main toy model at about 4 iterations/s on this 2-core CPU (~17 min).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from autoguidance.io import atomic
from autoguidance.toy.experiment import ToySettings, run_toy
from autoguidance.toy.mixture import ToyMixture
from autoguidance.toy.model import ToyModel, ToyModelConfig

REFERENCE_MAIN_ITERATIONS_PER_S = 4.0


def time_call(fn, repeats: int) -> float:
    fn()  # warm-up (numba compilation, allocator)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def hot_spots(batch: int = 4096) -> dict:
    mixture = ToyMixture((0,))
    g = torch.Generator().manual_seed(0)
    sigma = (-2.3 + 1.5 * torch.randn(batch, generator=g)).exp()
    x = mixture.sample(batch, 0.0, g) + sigma[:, None] * torch.randn(batch, 2, generator=g)
    net = ToyModel(ToyModelConfig(width=64)).train()
    target = torch.randn(batch, 2)

    def step():
        pred = net.score(x, sigma, create_graph=True)
        (sigma[:, None] ** 2 * (pred - target).square()).sum(1).mean().backward()

    return {
        "exact_score_kernel_s": time_call(lambda: mixture.log_prob_and_score(x, sigma), 20),
        "exact_score_tensor_ops_s": time_call(lambda: mixture._torch_log_prob_and_score(x, sigma), 5),
        "mlp_double_backward_step_s": time_call(step, 20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--retrain", action="store_true", help="train the models instead of the shipped")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spots = hot_spots()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        settings = ToySettings.create(quick=args.quick, device="cpu")
        start, cpu_start = time.perf_counter(), time.process_time()
        metrics = run_toy(settings, out, retrain=args.retrain, progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    timings = metrics["timings"]
    main_its = settings.models["main"]["iterations"] / timings["train_main"] if args.retrain else None
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_end": os.getloadavg()[0],
            "platform": platform.platform(),
        },
        "settings": settings.to_dict(),
        "quick": args.quick,
        "wall_seconds": wall,
        # CPU seconds of this process: on one thread, about the wall time the run takes on an idle core.
        "cpu_seconds": cpu,
        "stages_seconds": timings,
        "main_iterations_per_s": main_its,
        "speedup_vs_reference_main_training": main_its and main_its / REFERENCE_MAIN_ITERATIONS_PER_S,
        "hot_spots_seconds": spots,
        "kernel_speedup_vs_tensor_ops": spots["exact_score_tensor_ops_s"] / spots["exact_score_kernel_s"],
        "methods": metrics["methods"],
    }
    print(f"{'stage':<24}{'seconds':>10}")
    for name, sec in timings.items():
        print(f"{name:<24}{sec:>10.2f}")
    print(f"{'wall':<24}{wall:>10.2f}")
    print(f"{'cpu (this process)':<24}{cpu:>10.2f}")
    if main_its:
        speedup = result["speedup_vs_reference_main_training"]
        print(f"main model: {main_its:.1f} it/s = {speedup:.1f}x the reference's 4 it/s")
    print(
        f"exact score, 4096 x 1016: kernel {1e3 * spots['exact_score_kernel_s']:.1f} ms vs tensor ops "
        f"{1e3 * spots['exact_score_tensor_ops_s']:.1f} ms ({result['kernel_speedup_vs_tensor_ops']:.1f}x); "
        f"MLP step {1e3 * spots['mlp_double_backward_step_s']:.1f} ms"
    )
    name = "toy" + ("-quick" if args.quick else "") + ("-retrain" if args.retrain else "")
    path = Path(__file__).parent / "results" / f"{name}.json"
    atomic.write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
