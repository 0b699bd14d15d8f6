"""A small CNN classifier per built-in dataset: its penultimate features give `fd_classifier`, and its
predictions the class distribution of a generated set.

Inception and DINOv2 were trained on natural photographs at 299 and 224 pixels; an 8x8 or 32x32 grey digit
blown up to that size is far from what they know, and they cost seconds per image here. A CNN trained on
the dataset's own training split sees what matters for digits and runs at thousands of images per
second. It is trained here, deterministically (fixed seed, one thread, fixed schedule), on the 'train'
split only, so the held-out 'test' split measures it; the weights are cached as safetensors with the
held-out accuracy and the training settings in the metadata, and retrained when missing.

Input: uint8 grey images (N, H, W, 1) scaled to [-1, 1] like the training data. Network: three 3x3
convolutions (16, 32, 64 channels, ReLU, 2x2 max pool after the first two), average pool to 4x4, a 128-d
ReLU layer (the features), a linear layer to the class logits.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from ...errors import UserInputError
from ...io import checkpoint
from ...io.cache import cache_dir, file_sha256
from .base import Detector

VERSION = "classifier-v1"
KIND = "feature-classifier"
FEATURE_DIM = 128
DATASETS = ("digits", "mnist")
# Training schedule: part of the version. Adam, batch 64; enough for ~97-99% held-out accuracy.
SEED, EPOCHS, BATCH, LR = 0, 10, 64, 2e-3


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, FEATURE_DIM), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, H, W) in [-1, 1] -> (features (N, 128), logits (N, classes))."""
        f = self.body(x)
        return f, self.head(f)


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic on every machine: the cached weights reproduce
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_classifier(dataset: str, progress: bool = False) -> tuple[SmallCNN, dict]:
    """Train on `dataset`'s 'train' split (deterministic); return the net and metadata incl. accuracy."""
    from ...data import load_builtin

    train, test = load_builtin(dataset, "train"), load_builtin(dataset, "test")
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        net = SmallCNN(train.channels, train.num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        order = torch.Generator().manual_seed(SEED)
        for epoch in range(EPOCHS):
            for g in opt.param_groups:  # cosine decay: stable final weights without a validation pick
                g["lr"] = LR * 0.5 * (1 + torch.cos(torch.tensor(epoch / EPOCHS * torch.pi)).item())
            perm = torch.randperm(len(train), generator=order)
            for start in range(0, len(train), BATCH):
                idx = perm[start : start + BATCH]
                _, logits = net(train.images[idx])
                loss = nn.functional.cross_entropy(logits, train.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if progress:
                print(f"classifier {dataset}: epoch {epoch + 1}/{EPOCHS}, loss {loss.item():.4f}", flush=True)
        net.eval()
        with torch.no_grad():
            predicted = torch.cat(
                [net(test.images[s : s + 500])[1].argmax(1) for s in range(0, len(test), 500)]
            )
    accuracy = float((predicted == test.labels).double().mean())
    meta = {
        "kind": KIND,
        "version": VERSION,
        "dataset": dataset,
        "channels": train.channels,
        "resolution": train.resolution,
        "num_classes": train.num_classes,
        "train_split": f"{dataset}:train",
        "train_images": len(train),
        "held_out_split": f"{dataset}:test",
        "held_out_images": len(test),
        "held_out_accuracy": accuracy,
        "training": {
            "seed": SEED,
            "epochs": EPOCHS,
            "batch": BATCH,
            "lr": LR,
            "optimizer": "adam",
            "threads": 1,
        },
    }
    return net, meta


def default_path(dataset: str) -> Path:
    return cache_dir() / f"{VERSION}-{dataset}.safetensors"


class ClassifierDetector(Detector):
    """Penultimate features (128-d) and predictions of a `SmallCNN` loaded from safetensors."""

    name = "classifier"
    feature_dim = FEATURE_DIM

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        tensors, meta = checkpoint.load(path, kind=KIND)
        self.meta = meta
        self.path = Path(path)
        self.digest = file_sha256(path)
        self.net = SmallCNN(int(meta["channels"]), int(meta["num_classes"]))
        try:
            self.net.load_state_dict(tensors)
        except RuntimeError as e:
            raise UserInputError(
                f"classifier {str(path)!r} does not match {VERSION}: {str(e).splitlines()[0]}"
            ) from None
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    @classmethod
    def for_dataset(
        cls, dataset: str | None, device: str | torch.device = "cpu", progress: bool = False
    ) -> ClassifierDetector:
        """The cached classifier of a built-in dataset, trained (and cached) first if missing."""
        if dataset not in DATASETS:
            raise UserInputError(
                f"the classifier detector exists for the built-in datasets {', '.join(DATASETS)} only, "
                f"got {dataset!r}"
            )
        path = default_path(dataset)
        if not path.is_file():
            net, meta = train_classifier(dataset, progress=progress)
            checkpoint.save(path, net.state_dict(), meta)
        return cls(path, device=device)

    @property
    def version(self) -> str:
        return f"{VERSION}/{self.meta['dataset']}/{self.digest[:16]}"

    @property
    def held_out_accuracy(self) -> float:
        return float(self.meta["held_out_accuracy"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def describe(self) -> dict:
        return {
            **super().describe(),
            "dataset": self.meta["dataset"],
            "held_out_accuracy": self.held_out_accuracy,
        }

    def _check(self, images: torch.Tensor) -> None:
        c, r = int(self.meta["channels"]), int(self.meta["resolution"])
        if images.shape[1:] != (r, r, c):
            raise UserInputError(
                f"the {self.meta['dataset']} classifier takes {r}x{r} images with {c} channel(s), "
                f"got {images.shape[2]}x{images.shape[1]} with {images.shape[3]}"
            )

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits_(images)[0]

    def features_and_logits_(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(images)
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return self.net(x)

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, W, C) uint8 -> features (N, 128) and logits (N, classes), float32 on the CPU."""
        f, logits = self.features_and_logits_(images.to(self.device))
        return f.float().cpu(), logits.float().cpu()
