"""Image-model throughput: sampling (unguided, autoguided, with a guidance interval) and training, per preset.

    .venv/bin/python benchmarks/images.py [--presets xxs,xs,s,m] [--steps 8] [--images 16] [--threads 2]

What it measures, at 32x32 (MNIST-sized, class-conditional), with untrained networks (cost does not depend
on the weights):
- eval: one denoiser evaluation, ms per image (best of --repeats, at batch --batch), and FLOPs (nets.flops).
- sampling: images/s of the Heun sampler (2 steps - 1 evaluations per image), unguided and autoguided
  with the guide one preset smaller (the paper's XS-guides-S). The guided/unguided time ratio is set
  against its floor 1 + cost(guide) / cost(main), with cost by FLOPs and by measured evaluation time.
- interval: the same with the guide used only for sigma in (0.28, 2.90] (EDM2-S's interval): the floor
  becomes 1 + f cost(guide) / cost(main), f the fraction of evaluations inside the interval.
- training: images/s of `training.loop.train` on MNIST (median over iterations after the first).
Each section is a function returning JSON-ready rows; `SECTIONS` lists them, so adding one is one entry.
Results go to benchmarks/results/images.json (atomic write) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from autoguidance.generate import generate_images
from autoguidance.io import atomic
from autoguidance.nets.flops import flops_per_evaluation
from autoguidance.nets.precond import EDM2Denoiser, build
from autoguidance.nets.presets import PRESET_NAMES, preset_config
from autoguidance.sampling import edm_sigmas

RESOLUTION, CHANNELS, LABEL_DIM = 32, 1, 10
INTERVAL = (0.28, 2.90)  # EDM2-S ImageNet-512 (Kynkaanniemi et al. 2024)
RESULTS = Path(__file__).resolve().parent / "results" / "images.json"


@dataclass(frozen=True)
class Settings:
    presets: tuple[str, ...]
    steps: int
    images: int
    batch: int
    repeats: int
    threads: int
    train_batch: int
    train_iters: int


def _net(preset: str) -> EDM2Denoiser:
    return build(preset_config(preset, RESOLUTION, CHANNELS, LABEL_DIM)).eval()


def _best_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Best wall time of `repeats` calls (after one untimed warm-up call): on a shared CPU the minimum is
    the least disturbed estimate of the true cost."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def eval_cost(net: EDM2Denoiser, batch: int, repeats: int) -> float:
    """Seconds per image of one evaluation D(x; sigma, c) at batch size `batch`."""
    x = torch.randn(batch, CHANNELS, RESOLUTION, RESOLUTION)
    sigma, cond = torch.ones(batch), torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        return _best_time(lambda: net(x, sigma, cond), repeats) / batch


def interval_fraction(steps: int, interval: tuple[float, float]) -> float:
    """Fraction of the Heun sampler's 2 steps - 1 evaluations whose sigma lies in (lo, hi]."""
    sig = edm_sigmas(steps).tolist()
    evals = sig[:-1] + [s for s in sig[1:] if s > 0]  # sigma_i, then the corrections at sigma_{i+1} > 0
    return sum(interval[0] < s <= interval[1] for s in evals) / len(evals)


def bench_sampling(s: Settings) -> list[dict]:
    """One row per preset: eval cost, unguided / guided / interval throughput and the guided cost ratios."""
    rows = []
    nets = {p: _net(p) for p in s.presets}
    guides = {p: PRESET_NAMES[PRESET_NAMES.index(p) - 1] for p in s.presets if PRESET_NAMES.index(p) > 0}
    for g in set(guides.values()) - set(nets):
        nets[g] = _net(g)
    flops = {p: flops_per_evaluation(n) for p, n in nets.items()}
    evals = {p: eval_cost(n, s.batch, s.repeats) for p, n in nets.items()}
    frac = interval_fraction(s.steps, INTERVAL)
    seeds = range(s.images)

    def run(net: EDM2Denoiser, **kw) -> float:
        # No warm-up: eval_cost above has already run every network at this batch size.
        return _best_time(
            lambda: generate_images(net, seeds, num_steps=s.steps, batch_size=s.batch, **kw),
            s.repeats,
            warmup=False,
        )

    for p in s.presets:
        row = {"preset": p, "mflops": flops[p] / 1e6, "eval_ms_per_image": evals[p] * 1e3}
        t_plain = run(nets[p])
        row["unguided_images_per_s"] = s.images / t_plain
        if p in guides:
            g = guides[p]
            t_guided = run(nets[p], guide=nets[g], guidance=2.0)
            t_interval = run(nets[p], guide=nets[g], guidance=2.0, interval=INTERVAL)
            row |= {
                "guide": g,
                "guided_images_per_s": s.images / t_guided,
                "ratio_measured": t_guided / t_plain,
                "floor_flops": 1 + flops[g] / flops[p],
                "floor_eval_time": 1 + evals[g] / evals[p],
                "interval": list(INTERVAL),
                "interval_fraction": frac,
                "interval_images_per_s": s.images / t_interval,
                "interval_ratio_measured": t_interval / t_plain,
                "interval_floor_flops": 1 + frac * flops[g] / flops[p],
                "interval_floor_eval_time": 1 + frac * evals[g] / evals[p],
            }
        rows.append(row)
        print(f"  sampling {p}: done", file=sys.stderr)
    return rows


def bench_training(s: Settings) -> list[dict]:
    """Training images/s per preset: a few iterations of `training.loop.train` on MNIST (conditional)."""
    from autoguidance.training.loop import LOG_FILE, TrainConfig, train  # the training engineer's module

    rows = []
    for p in s.presets:
        config = TrainConfig(
            dataset="mnist",
            preset=p,
            cond=True,
            batch_size=s.train_batch,
            duration=s.train_batch * 10**6,
            snapshot_every=10**12,
            checkpoint_every=10**12,
        )
        with tempfile.TemporaryDirectory() as run_dir:
            train(config, run_dir, progress=False, device="cpu", stop_after=s.train_iters, log_every=1)
            log = [json.loads(line) for line in (Path(run_dir) / LOG_FILE).read_text().splitlines()]
        rates = [r["images_per_sec"] for r in log[1:]]  # the first iteration pays for warm-up
        rows.append(
            {
                "preset": p,
                "batch": s.train_batch,
                "iterations": len(rates),
                "train_images_per_s": statistics.median(rates),
            }
        )
        print(f"  training {p}: done", file=sys.stderr)
    return rows


SECTIONS: dict[str, Callable[[Settings], list[dict]]] = {
    "sampling": bench_sampling,
    "training": bench_training,
}


def print_tables(results: dict) -> None:
    sampling = results.get("sampling", [])
    if sampling:
        print(
            f"\nSampling at {RESOLUTION}x{RESOLUTION}, Heun {results['settings']['steps']} steps, "
            f"guide = one preset smaller, w = 2; ratio = guided / unguided time per image;\n"
            f"floorF / floorT = 1 + (frac x) cost(guide) / cost(main) by FLOPs / by eval time; "
            f"frac = share of evaluations inside the interval"
        )
        head = (
            f"{'preset':6} {'MFLOP':>7} {'ms/eval':>8} {'img/s':>7} | {'guide':>5} {'img/s':>7} "
            f"{'ratio':>6} {'floorF':>6} {'floorT':>6} | {'frac':>5} {'img/s':>7} {'ratio':>6} "
            f"{'floorF':>6} {'floorT':>6}"
        )
        print(" " * 31 + "| autoguided" + " " * 31 + "| with interval (0.28, 2.90]")
        print(head)
        for r in sampling:
            line = (
                f"{r['preset']:6} {r['mflops']:7.1f} {r['eval_ms_per_image']:8.2f} "
                f"{r['unguided_images_per_s']:7.1f}"
            )
            if "guide" in r:
                line += (
                    f" | {r['guide']:>5} {r['guided_images_per_s']:7.1f} {r['ratio_measured']:6.2f} "
                    f"{r['floor_flops']:6.2f} {r['floor_eval_time']:6.2f} "
                    f"| {r['interval_fraction']:5.2f} "
                    f"{r['interval_images_per_s']:7.1f} {r['interval_ratio_measured']:6.2f} "
                    f"{r['interval_floor_flops']:6.2f} {r['interval_floor_eval_time']:6.2f}"
                )
            print(line)
    training = results.get("training", [])
    if training:
        print(f"\nTraining on MNIST {RESOLUTION}x{RESOLUTION}, conditional")
        print(f"{'preset':6} {'batch':>5} {'img/s':>8}")
        for r in training:
            print(f"{r['preset']:6} {r['batch']:5d} {r['train_images_per_s']:8.1f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESET_NAMES))
    ap.add_argument("--steps", type=int, default=8, help="Heun steps per image")
    ap.add_argument("--images", type=int, default=16, help="images per sampling measurement")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (best kept) after a warm-up")
    # One thread by default: on a shared 2-core machine two OpenMP threads spin against other jobs and
    # run 10-40x slower than one; pass --threads on a quiet machine.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--train-iters", type=int, default=4, help="iterations timed (the first is dropped)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    presets = tuple(p.strip() for p in args.presets.split(","))
    sections = [x.strip() for x in args.sections.split(",")]
    unknown = [p for p in presets if p not in PRESET_NAMES] + [x for x in sections if x not in SECTIONS]
    if unknown:
        ap.error(f"unknown presets or sections: {unknown}")
    torch.set_num_threads(args.threads)
    settings = Settings(
        presets,
        args.steps,
        args.images,
        args.batch,
        args.repeats,
        args.threads,
        args.train_batch,
        args.train_iters,
    )
    results: dict = {
        "settings": {**settings.__dict__, "resolution": RESOLUTION, "label_dim": LABEL_DIM},
        "machine": {
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "device": "cpu",
        },
    }
    t0 = time.perf_counter()
    for name in sections:
        results[name] = SECTIONS[name](settings)
    results["wall_s"] = time.perf_counter() - t0
    atomic.write_json(args.out, results)
    print_tables(results)
    print(f"\n{results['wall_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
