"""Training-free weak guides against trained ones on MNIST: class agreement of autoguided samples.

    python benchmarks/weak_guides_mnist.py --net S.safetensors \
        --guides "file:XS.safetensors;file:S_EARLY.safetensors;dropout:0.1;input-noise:0.5;quantize:4" \
        [--guidance 2] [--images 100] [--steps 32] [--out benchmarks/results/weak_guides_mnist.json]

Each guide (a checkpoint `file:PATH`, or a `--weak-guide` spec derived from the main network) guides
the main network at weight w; `images` samples (seeds 0..images-1, each seed's class drawn from its own
generator, so the same seeds and classes for every guide) are labelled by the MLP classifier of
`mnist_quality.py` (trained on the MNIST training split) and the share labelled as the requested class is
reported, with the unguided main model as the baseline.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.neural_network import MLPClassifier

from autoguidance.data import load_builtin
from autoguidance.generate import generate_images
from autoguidance.guides.weak import weak_guide
from autoguidance.io import atomic
from autoguidance.io.networks import load_network


def features(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", required=True)
    ap.add_argument("--guides", required=True, help="';'-separated: file:PATH or KIND:VALUE")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the unguided row")
    ap.add_argument("--save", default=None, help="also write each guide's images and labels here (.npz)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "weak_guides_mnist.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train, test = load_builtin("mnist", "train"), load_builtin("mnist", "test")
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=200, random_state=0)
    clf.fit(features(train.images[:, 0].numpy()), train.labels.numpy())
    held_out = float((clf.predict(features(test.images[:, 0].numpy())) == test.labels.numpy()).mean())
    print(f"classifier accuracy on the held-out split: {held_out:.3f}", flush=True)

    net, _ = load_network(args.net)
    seeds = list(range(args.images))
    rows = {}
    specs = [s.strip() for s in args.guides.split(";") if s.strip()]
    for spec in specs if args.no_baseline else ["none", *specs]:
        if spec == "none":
            guide, w = None, 1.0
        elif spec.startswith("file:"):
            guide, w = load_network(spec[5:])[0], args.guidance
        else:
            guide, w = weak_guide(net, spec, seed=0), args.guidance
        start = time.perf_counter()
        images, labels = generate_images(
            net, seeds, guide=guide, guidance=w, num_steps=args.steps, batch_size=args.batch
        )
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            name = "".join(c if c.isalnum() or c in "-." else "_" for c in spec)
            np.savez(Path(args.save) / f"{name}.npz", images=images.numpy(), labels=labels.numpy())
        x = images[..., 0].numpy().astype(np.float32) / 127.5 - 1
        hits, total = int((clf.predict(features(x)) == labels.numpy()).sum()), len(seeds)
        seconds = time.perf_counter() - start
        rows[spec] = {"guidance": w, "class_agreement": hits / total, "images": total, "seconds": seconds}
        print(
            f"{spec:<40s} w = {w:g}: class agreement {hits / total:.3f} ({total} images, {seconds:.0f} s)",
            flush=True,
        )
    atomic.write_json(
        args.out,
        {
            "classifier_held_out_accuracy": held_out,
            "net": args.net,
            "images": args.images,
            "guidance": args.guidance,
            "steps": args.steps,
            "threads": args.threads,
            "by_guide": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
