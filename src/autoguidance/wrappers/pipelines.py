"""Generate images from a diffusers pipeline folder, autoguided by another pipeline's model (an earlier
checkpoint, a smaller sibling, the base model) or by a training-free weak guide, optionally with CFG.

The main and guide models are wrapped as EDM denoisers (`diffusers_adapter`), combined by
`guidance.GuidedDenoiser` (D = D_main + (w - 1)(D_main - D_guide) + (w_cfg - 1)(D_main - D_main(null))),
sampled by the package's Heun sampler from per-seed noise, and decoded by the main pipeline's VAE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..denoiser import without_condition
from ..errors import UserInputError
from ..guidance import GuidedDenoiser, GuideTerm, check_weight
from ..guides.weak import weak_guide
from ..images import to_uint8
from ..seeds import SeedStreams
from .diffusers import PipelineParts, check_same_task, from_pipeline
from .precision import parse_dtype
from .sample_any import sample_from_seeds


def load_pipeline(path: str | os.PathLike, dtype: str = "fp32", null_class: bool = True) -> PipelineParts:
    """A pipeline saved with save_pretrained (a local folder) -> its denoiser, decoder and shape."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise UserInputError(
            "diffusers models need the extra: pip install 'autoguidance[diffusers]'"
        ) from None
    if not os.path.isdir(path):
        raise UserInputError(f"{path} is not a diffusers pipeline folder")
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserInputError(f"cannot load the pipeline {path}: {str(exc).splitlines()[0]}") from None
    dt = parse_dtype(dtype)
    parts = from_pipeline(pipe, dtype=None if dt == torch.float32 else dt)
    model = parts.denoiser.model
    null = getattr(model.config, "num_embeds_ada_norm", None)  # DiT: the extra "no class" label
    if null_class and null is not None:
        parts.denoiser.null_cond = NullLabel(int(null))
    return parts


def num_classes(parts: PipelineParts) -> int:
    """Class labels a model takes (0: none): DiT's num_embeds_ada_norm, a UNet's num_class_embeds."""
    cfg = parts.denoiser.model.config
    return int(getattr(cfg, "num_embeds_ada_norm", None) or getattr(cfg, "num_class_embeds", None) or 0)


@dataclass
class DiffusersSettings:
    seeds: list[int]
    guidance: float = 1.0
    cfg_guidance: float = 1.0
    class_label: int | None = None
    num_steps: int = 32
    batch_size: int = 8
    sigma_min: float | None = None
    sigma_max: float | None = None


def _labels(parts: PipelineParts, settings: DiffusersSettings, device: torch.device) -> torch.Tensor | None:
    k = num_classes(parts)
    if k == 0:
        if settings.class_label is not None:
            raise UserInputError("--class given, but the model takes no class labels")
        return None
    if settings.class_label is not None:
        if not 0 <= settings.class_label < k:
            raise UserInputError(f"class must lie in [0, {k - 1}], got {settings.class_label}")
        return torch.full((len(settings.seeds),), settings.class_label, device=device)
    # A class per seed from the seed's own generator, after its noise (as generation.generate_images).
    streams = SeedStreams(settings.seeds)
    streams.randn(tuple(parts.sample_shape))
    return streams.randint(k, device=device)


@dataclass(frozen=True)
class NullLabel:
    """The null class label (DiT's "no class" embedding) for a batch: CFG's unconditional branch."""

    label: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.label, device=x.device, dtype=torch.long)


def generate_diffusers(
    main: PipelineParts,
    settings: DiffusersSettings,
    guide: PipelineParts | None = None,
    weak: str | None = None,
    weak_seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (N, H, W, 3) and the class labels used (or None)."""
    w, w_cfg = check_weight(settings.guidance), check_weight(settings.cfg_guidance)
    if guide is not None and weak is not None:
        raise UserInputError("give a guide model or a weak guide, not both")
    main.denoiser.to(device).eval()
    main_fn = main.denoiser
    terms = []
    if guide is not None:
        check_same_task(main, guide)
        guide.denoiser.to(device).eval()
        terms.append(GuideTerm(guide.denoiser, w))
    elif weak is not None:
        terms.append(GuideTerm(weak_guide(main.denoiser, weak, weak_seed), w))
    elif w != 1.0:
        raise UserInputError("--guidance needs a guide (--guide or --weak-guide)")
    if w_cfg != 1.0:
        if num_classes(main) == 0:
            raise UserInputError("CFG needs a class-conditional model")
        if main.denoiser.null_cond is None:
            raise UserInputError("this model has no null class for the unconditional branch of CFG")
        terms.append(GuideTerm(without_condition(main_fn), w_cfg))
    denoiser = GuidedDenoiser(main_fn, terms) if terms else main_fn
    dev = torch.device(device)
    labels = _labels(main, settings, dev)
    sched = main.denoiser.schedule
    x = sample_from_seeds(
        denoiser,
        main.sample_shape,
        settings.seeds,
        cond=labels,
        num_steps=settings.num_steps,
        sigma_min=settings.sigma_min or sched.sigma_min,
        sigma_max=settings.sigma_max or min(sched.sigma_max, 80.0),
        batch_size=settings.batch_size,
        device=dev,
        codec=main.codec,
    )
    images = x if main.codec is not None else to_uint8(x)
    return images, None if labels is None else labels.cpu()
