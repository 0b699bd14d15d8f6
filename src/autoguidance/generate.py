"""THE seeded generation loop: seeds -> per-sample noise (and classes) -> sampler -> images, batch by batch.

    seeds -> SeedStreams -> (noise, class) -> any denoiser -> EDM sampler -> decode -> uint8 images

Each sample draws everything random from its own generator seeded by its seed, in a fixed order: the
initial noise (the sample's shape), then, for a class-conditional denoiser, its class label (drawn even
when `class_label` fixes the class, so that the generator state, and hence any churn noise, does not depend
on that option), then the churn noise step by step. An image therefore depends on its seed and the
settings only, never on the batch size or on how seeds are split across processes: under torchrun each
process passes its share (`distributed.shard_seeds`, whole batches) and gets exactly the batches a single
process would make. The same loop serves pixel and latent models (`decode`), our networks and wrapped
ones, `generate`, `evaluate`, the sweeps and the diffusers paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .denoiser import Denoiser, evaluating, modules_of, select_rows, signature
from .errors import UserInputError, check_int
from .images import to_uint8
from .progress import Progress
from .sampling import SamplerSettings, sample
from .seeds import MAX_SEED, SeedStreams

Decode = Callable[[torch.Tensor], torch.Tensor]
"""Samples (B, C, h, w) -> uint8 images (B, H, W, C): a latent model's VAE decoder, for example."""


@dataclass(frozen=True)
class Batch:
    """One batch of the loop: its seeds, images (n, H, W, C) uint8 on the CPU (or what `decode` returns;
    None for a batch that `skip` left out), and the class labels used (n,) int64 on the CPU, or None for an
    unconditional denoiser."""

    seeds: list[int]
    images: torch.Tensor | None
    labels: torch.Tensor | None


def check_seeds(seeds: Sequence[int]) -> list[int]:
    out = [int(s) for s in seeds]
    bad = [s for s in out if not 0 <= s <= MAX_SEED]
    if bad:
        raise UserInputError(f"seeds must lie in [0, 2^63), got {bad[:3]}")
    return out


def check_class_label(classes: int, class_label: int | None) -> int | None:
    """Validate a fixed class for a denoiser with `classes` labels: None, or an int in [0, classes)."""
    if class_label is None:
        return None
    if classes == 0:
        raise UserInputError(f"class {class_label} given, but the model is unconditional")
    if isinstance(class_label, bool) or not isinstance(class_label, int) or not 0 <= class_label < classes:
        raise UserInputError(f"class must be an integer in [0, {classes - 1}], got {class_label!r}")
    return class_label


def _sample_shape(denoiser: Denoiser, shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = shape if shape is not None else signature(denoiser).shape
    if shape is None:
        raise UserInputError("the denoiser does not declare its sample shape: pass shape=(C, H, W)")
    return tuple(int(s) for s in shape)


@torch.no_grad()
def generate_batches(
    denoiser: Denoiser,
    seeds: Sequence[int],
    *,
    shape: Sequence[int] | None = None,
    classes: int | None = None,
    class_label: int | None = None,
    cond: Any = None,
    sampler: SamplerSettings | None = None,
    sigmas: torch.Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    decode: Decode | None = None,
    progress: bool = False,
    skip: Callable[[list[int]], bool] | None = None,
) -> Iterator[Batch]:
    """Sample one image per seed, `batch_size` seeds at a time, in the order of `seeds`.

    denoiser: any denoiser (a network, a guided one from `guidance.guided`, a wrapped model); its
        modules are evaluated in eval mode. shape (C, H, W) and classes: what it samples (default: what
        it declares, `denoiser.signature`). class_label: fix every sample's class; None draws it per
        seed. cond: conditioning other than class labels, given as a whole (`denoiser` convention: its
        tensors have one row per seed, or are shared), sliced per batch. sampler: the EDM sampler's
        settings (Heun, 32 steps by default); `sigmas` overrides its schedule (a wrapped model's own).
    decode: samples -> images (a VAE decoder); default `images.to_uint8` of [-1, 1] pixels.
    skip(seeds) -> True leaves a batch's images unmade (a resumed run that has them): the batches stay
    those of an uninterrupted run, and the skipped batch's labels are still drawn and yielded.
    """
    seeds = check_seeds(seeds)
    shape = _sample_shape(denoiser, shape)
    classes = signature(denoiser).classes if classes is None else classes
    class_label = check_class_label(classes or 0, class_label)
    check_int("batch_size", batch_size, minimum=1)
    sampler = sampler or SamplerSettings()
    sigmas = sampler.sigmas() if sigmas is None else sigmas
    device = torch.device(device) if device is not None else _device_of(denoiser)
    bar = Progress("generate", len(seeds), unit="img", enabled=progress)  # a bar, or log lines
    with evaluating(denoiser):
        for start in range(0, len(seeds), batch_size):
            mine = seeds[start : start + batch_size]
            streams = SeedStreams(mine, device=device)  # the noise is made where it is used
            latents = streams.randn(shape)  # draw 1: the initial noise
            labels = None
            if classes:
                labels = streams.randint(classes)  # draw 2: the class, always drawn
                if class_label is not None:
                    labels = torch.full_like(labels, class_label)
            cpu_labels = None if labels is None else labels.cpu()
            if skip is not None and skip(mine):
                bar.update(len(mine))
                yield Batch(mine, None, cpu_labels)
                continue
            c = labels if cond is None else select_rows(cond, slice(start, start + len(mine)), len(seeds))
            x = sample(
                denoiser, latents, sigmas, c, solver=sampler.solver, churn=sampler.churn_settings(),
                streams=streams,
            )  # fmt: skip
            images = decode(x) if decode is not None else to_uint8(x)
            bar.update(len(mine))
            yield Batch(mine, images.cpu(), cpu_labels)
    bar.close()


def generate_images(
    denoiser: Denoiser, seeds: Sequence[int], **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All of `generate_batches` at once: images (N, H, W, C) in the order of `seeds`, and the labels
    (N,) or None."""
    batches = list(generate_batches(denoiser, seeds, **kwargs))
    if not batches:  # a process with no share of the seeds: empty, but shaped like the others' results
        shape = _sample_shape(denoiser, kwargs.get("shape"))
        classes = kwargs.get("classes", signature(denoiser).classes)
        labels = torch.zeros(0, dtype=torch.int64) if classes else None
        return torch.zeros((0, shape[1], shape[2], shape[0]), dtype=torch.uint8), labels
    labels = None if batches[0].labels is None else torch.cat([b.labels for b in batches])
    return torch.cat([b.images for b in batches]), labels


def _device_of(denoiser: Denoiser) -> torch.device:
    for module in modules_of(denoiser):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")
