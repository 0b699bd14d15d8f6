"""Floors and sanity of the image metrics on MNIST, each detector's throughput, and the README's models.

    python benchmarks/metrics_mnist.py features --detector inception [--sets train,test,blur,noise]
    python benchmarks/metrics_mnist.py generate --net MAIN --guide GUIDE --count 500
    python benchmarks/metrics_mnist.py report

`features` computes and caches (under --work, default /work/runs/metrics) one detector's features of:
train (mnist:train, 4,500 images, the reference), test (mnist:test, 500 held-out images), blur (the test
images blurred by a Gaussian of 1 pixel standard deviation), noise (the test images plus Gaussian noise
of 25.5 grey levels, i.e. 10% of the range, clipped), and of generated sets written by `generate`
(unguided and autoguided at w = 2, seeds 0..count-1). It records the wall time per set (1 thread).
`report` computes FD and precision/recall (k = 3) of every cached set against train and writes
benchmarks/results/metrics_mnist.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from autoguidance.io import atomic

torch.set_num_threads(1)

BASE_SETS = ("train", "test", "blur", "noise")


def mnist_uint8(split: str) -> torch.Tensor:
    from autoguidance.data import load_builtin

    x = load_builtin("mnist", split).images  # (N, 1, 32, 32) in [-1, 1], exactly k / 127.5 - 1
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def image_set(name: str, work: Path) -> torch.Tensor:
    if name in ("train", "test"):
        return mnist_uint8(name)
    if name == "train9":  # every 9th training image (500; the split is sorted by class, so balanced)
        return mnist_uint8("train")[::9].contiguous()
    if name == "blur":
        x = mnist_uint8("test").numpy().astype(np.float64)
        y = gaussian_filter(x, sigma=(0, 1.0, 1.0, 0), mode="constant")
        return torch.from_numpy(np.clip(np.round(y), 0, 255).astype(np.uint8))
    if name == "noise":
        x = mnist_uint8("test").numpy().astype(np.float64)
        y = x + np.random.RandomState(0).normal(0, 25.5, size=x.shape)
        return torch.from_numpy(np.clip(np.round(y), 0, 255).astype(np.uint8))
    return torch.from_numpy(np.load(work / "generated" / f"{name}.npy"))


def make_detector(name: str, args):
    from autoguidance.metrics.detectors import make_detector as make

    return make(name, inception_weights=args.inception_weights, dataset="mnist")


def cmd_features(args) -> None:
    work = Path(args.work)
    det = make_detector(args.detector, args)
    out_dir = work / "features"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        images = image_set(name, work)
        start, cpu = time.perf_counter(), time.process_time()
        feats = [det.features(images[i : i + args.batch]) for i in range(0, len(images), args.batch)]
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        np.save(out_dir / f"{args.detector}-{name}.npy", torch.cat(feats).numpy())
        record = {
            "images": len(images),
            "seconds": seconds,
            "cpu_seconds": cpu,
            "images_per_cpu_s": len(images) / cpu,
            "images_per_s": len(images) / seconds,
            "version": det.version,
            "threads": torch.get_num_threads(),
        }
        atomic.write_json(out_dir / f"{args.detector}-{name}.json", record)
        print(args.detector, name, json.dumps(record), flush=True)


def cmd_generate(args) -> None:
    from autoguidance.generate import generate_images
    from autoguidance.io.networks import load_network

    work = Path(args.work)
    net, _ = load_network(args.net)
    guide, _ = load_network(args.guide)
    for name, g, w in (("unguided", None, 1.0), ("autoguided-w2", guide, 2.0)):
        start = time.perf_counter()
        images, labels = generate_images(
            net, list(range(args.count)), guide=g, guidance=w, batch_size=args.batch
        )
        seconds = time.perf_counter() - start
        (work / "generated").mkdir(parents=True, exist_ok=True)
        np.save(work / "generated" / f"{name}.npy", images.numpy())
        np.save(work / "generated" / f"{name}-labels.npy", labels.numpy())
        atomic.write_json(
            work / "generated" / f"{name}.json",
            {
                "images": args.count,
                "seconds": seconds,
                "net": args.net,
                "guide": args.guide if g else None,
                "w": w,
            },
        )
        print(name, args.count, f"{seconds:.0f} s", flush=True)


def cmd_dinov2_throughput(args) -> None:
    """Time the dinov2 detector with a randomly initialised ViT-L/14 (the real weights are not available
    offline here): the same architecture and input size, hence the same cost; its features mean nothing."""
    import tempfile

    from transformers import Dinov2Config, Dinov2Model

    from autoguidance.metrics.detectors.dinov2 import DINOv2Detector

    config = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                          image_size=518)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        Dinov2Model(config).save_pretrained(tmp, safe_serialization=True)
        det = DINOv2Detector(tmp)
        images = mnist_uint8("test")[: args.count]
        det.features(images[:1])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(images), args.batch):
            det.features(images[i : i + args.batch])
        seconds = time.perf_counter() - start
    record = {
        "images": len(images),
        "seconds": seconds,
        "images_per_s": len(images) / seconds,
        "version": det.version,
        "threads": torch.get_num_threads(),
        "weights": "random (timing only)",
    }
    atomic.write_json(Path(args.work) / "features" / "dinov2-throughput.json", record)
    print("dinov2", json.dumps(record), flush=True)


def cmd_ref_file(args) -> None:
    """Write a reference statistics file (ours) from cached features, for `evaluate --ref-stats`."""
    from autoguidance.metrics.frechet import FeatureStats
    from autoguidance.metrics.reference import Reference, save_reference

    work = Path(args.work)
    feats = torch.from_numpy(np.load(work / "features" / f"{args.detector}-{args.set}.npy"))
    timing = json.loads((work / "features" / f"{args.detector}-{args.set}.json").read_text())
    stats = FeatureStats.of(feats)
    images = image_set(args.set, work)
    dataset = {"train": "mnist:train", "train9": "mnist:train[::9]", "test": "mnist:test"}.get(
        args.set, args.set
    )
    ref = Reference(args.detector, timing["version"], dataset, images.shape[1], images.shape[3], stats.count,
                    stats.mean, stats.cov, feats)  # fmt: skip
    save_reference(args.out, ref)
    print(f"wrote {args.out}: {ref.describe()}")


def cmd_report(args) -> None:
    from autoguidance.metrics.frechet import FeatureStats, frechet_distance
    from autoguidance.metrics.precision_recall import manifold_metrics

    work = Path(args.work)
    rows = {}
    for det in ("classifier", "inception"):
        for ref_set in ("train", "train9"):  # the whole training split, and every 9th image of it
            if not (work / "features" / f"{det}-{ref_set}.npy").is_file():
                continue
            ref = np.load(work / "features" / f"{det}-{ref_set}.npy")
            ref_stats = FeatureStats.of(torch.from_numpy(ref))
            timing = json.loads((work / "features" / f"{det}-{ref_set}.json").read_text())
            key = f"{det} vs {ref_set}"
            rows[key] = {"version": timing["version"], "reference_count": len(ref), "sets": {}}
            for f in sorted((work / "features").glob(f"{det}-*.npy")):
                name = f.name[len(det) + 1 : -len(".npy")]
                if name in ("train", "train9"):
                    continue
                feats = torch.from_numpy(np.load(f))
                start = time.perf_counter()
                fd = frechet_distance(FeatureStats.of(feats), ref_stats)
                pr = manifold_metrics(torch.from_numpy(ref), feats, k=3)
                rows[key]["sets"][name] = {
                    "count": len(feats),
                    "fd": fd,
                    **pr,
                    "metric_seconds": time.perf_counter() - start,
                    "features": json.loads((work / "features" / f"{det}-{name}.json").read_text()),
                }
                print(
                    key,
                    name,
                    json.dumps({k: v for k, v in rows[key]["sets"][name].items() if k != "features"}),
                )
    path = Path(__file__).parent / "results" / "metrics_mnist.json"
    atomic.write_json(path, rows)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/work/runs/metrics")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features")
    f.add_argument("--detector", required=True)
    f.add_argument("--sets", default=",".join(BASE_SETS))
    f.add_argument("--batch", type=int, default=50)
    f.add_argument("--inception-weights", default=None)
    g = sub.add_parser("generate")
    g.add_argument("--net", required=True)
    g.add_argument("--guide", required=True)
    g.add_argument("--count", type=int, default=500)
    g.add_argument("--batch", type=int, default=50)
    sub.add_parser("report")
    r = sub.add_parser("ref-file")
    r.add_argument("--detector", required=True)
    r.add_argument("--set", required=True)
    r.add_argument("--out", required=True)
    t = sub.add_parser("dinov2-throughput")
    t.add_argument("--count", type=int, default=16)
    t.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    commands = {"features": cmd_features, "generate": cmd_generate, "report": cmd_report}
    commands["dinov2-throughput"] = cmd_dinov2_throughput
    commands["ref-file"] = cmd_ref_file
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
