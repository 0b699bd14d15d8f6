"""What share of a training step and of a sampling step goes to per-sample seeded noise.

    python benchmarks/noise.py [--batch 64] [--noise-batch 512] [--resolution 64] [--device cpu]

Noise is drawn per sample from its own seeded generator (seeds.SeedStreams), one small draw per sample,
so that a sample does not depend on its batch. "before": the generators on the CPU in float64, the
stacked batch then copied to the device (the implementation up to this benchmark). "after": the
generators on the device that uses the noise (on the CPU the same work; on CUDA float32 draws on the
GPU, no host work and no copy). Times are medians of --repeats runs after one warm-up: on the CPU this
process's CPU time (a shared machine's wall time measures the other jobs), on a GPU wall time.

Training step: noise (image + ln sigma normal per sample) vs. forward + backward + Adam of preset `s`.
Sampling: the initial noise of a batch vs. one guided evaluation (s main + xs guide) times the 2N - 1
evaluations of N Heun steps; with churn, one more noise draw per step. Writes benchmarks/results/noise.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from autoguidance.guidance import autoguidance
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config
from autoguidance.seeds import SeedStreams
from autoguidance.training.loss import denoising_loss
from autoguidance.training.noise import sample_seed, training_noise


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WALL: dict[str, float] = {}


def _time(fn, device: torch.device, repeats: int, name: str = "") -> float:
    """Median seconds of `fn`: this process's CPU time on the CPU (the machine is shared, so wall time
    mostly measures the other jobs; the median wall time is kept in WALL for the record), wall time on
    a GPU (whose work the process's CPU time does not see)."""
    fn()  # warm-up
    _sync(device)
    times, walls = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - start)
        times.append(time.process_time() - start_cpu)
    WALL[name] = statistics.median(walls)
    return statistics.median(times if device.type == "cpu" else walls)


def _noise_before(seeds: list[int], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The earlier implementation: CPU generators, float64, stacked, then moved."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens])
    return out.to(device=device, dtype=torch.float32)


def _training_noise_before(step: int, batch: int, shape, device):
    seeds = [sample_seed(0, step, p) for p in range(batch)]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens])
    normal = torch.stack([torch.randn((), generator=g, dtype=torch.float64) for g in gens])
    return noise.to(device, torch.float32), normal.to(device, torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="batch of the timed network steps")
    ap.add_argument("--noise-batch", type=int, default=512, help="batch of the timed noise draws")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--steps", type=int, default=32, help="Heun steps N of the sampler")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "noise.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = (args.channels, args.resolution, args.resolution)
    torch.manual_seed(0)
    main_net = build(preset_config("s", args.resolution, args.channels, 10)).to(device)
    guide_net = build(preset_config("xs", args.resolution, args.channels, 10)).to(device)

    # ---- noise alone, per sample (measured at noise_batch)
    nb = args.noise_batch
    seeds = list(range(nb))
    noise = {
        "sampling_before_s": _time(lambda: _noise_before(seeds, shape, device), device, args.repeats, "sb"),
        "sampling_after_s": _time(
            lambda: SeedStreams(seeds, device=device).randn(shape), device, args.repeats, "sa"
        ),
        "training_before_s": _time(
            lambda: _training_noise_before(7, nb, shape, device), device, args.repeats, "tb"
        ),
        "training_after_s": _time(
            lambda: training_noise(0, 7, range(nb), shape, device), device, args.repeats, "ta"
        ),
    }
    per_sample = {k: v / nb for k, v in noise.items()}

    # ---- network work (measured at batch, per sample)
    b = args.batch
    opt = torch.optim.Adam(main_net.parameters(), lr=1e-3)
    images = torch.rand(b, *shape, device=device) * 2 - 1
    labels = torch.arange(b, device=device) % 10
    n, nrm = training_noise(0, 0, range(b), shape, device)

    def train_step() -> None:
        loss = denoising_loss(main_net.train(), images, labels, n, nrm, -0.8, 1.6, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    guided = autoguidance(main_net.eval(), guide_net.eval(), 2.0)
    x = torch.randn(b, *shape, device=device)
    sigma = torch.full((b,), 1.0, device=device)

    def guided_eval() -> None:
        with torch.no_grad():
            guided(x, sigma, labels)

    train_s = _time(train_step, device, max(2, args.repeats // 2), "train")
    eval_s = _time(guided_eval, device, max(2, args.repeats // 2), "eval")
    evals = 2 * args.steps - 1
    train_per_sample, sample_per_sample = train_s / b, eval_s * evals / b
    step_per_sample = eval_s * 2 / b  # one Heun step: two guided evaluations

    def share(noise_s: float, work_s: float) -> float:
        return noise_s / (noise_s + work_s)

    result = {
        "settings": {**vars(args), "out": None, "device": str(device), "torch": torch.__version__},
        "noise_batch_s": noise,
        "network": {"train_step_batch_s": train_s, "guided_eval_batch_s": eval_s, "evaluations": evals},
        "clock": "process CPU time" if device.type == "cpu" else "wall time",
        "median_wall_s": WALL,
        "share": {
            "training_before": share(per_sample["training_before_s"], train_per_sample),
            "training_after": share(per_sample["training_after_s"], train_per_sample),
            "sampling_before": share(per_sample["sampling_before_s"], sample_per_sample),
            "sampling_after": share(per_sample["sampling_after_s"], sample_per_sample),
            "churn_step_before": share(per_sample["sampling_before_s"], step_per_sample),
            "churn_step_after": share(per_sample["sampling_after_s"], step_per_sample),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["noise_batch_s"], indent=2))
    print(f"train step (batch {b}): {train_s:.3f} s; guided evaluation (batch {b}): {eval_s:.3f} s")
    for k, v in result["share"].items():
        print(f"noise share {k:18s} {100 * v:6.3f} %")


if __name__ == "__main__":
    main()
