"""Generate images from a diffusers pipeline folder, autoguided by another pipeline's model (an earlier
checkpoint, a smaller sibling, the base model) or by a training-free weak guide, optionally with CFG.

The main and guide models are wrapped as EDM denoisers (`wrappers.diffusers`), combined by the one builder
`guidance.guided` (D = D_main + (w - 1)(D_main - D_guide) + (w_cfg - 1)(D_main - D_main(null))), sampled
by the one generation loop (`generate`) from per-seed noise, and decoded by the main pipeline's VAE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from ..generate import generate_images
from ..guidance import guided
from ..guides import weak_guide
from ..sampling import SamplerSettings
from .diffusers import PipelineParts, from_pipeline, num_classes
from .precision import parse_dtype


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
    if guide is not None and weak is not None:
        raise UserInputError("give a guide model or a weak guide, not both")
    main.denoiser.to(device)
    guide_fn = None
    if guide is not None:
        guide_fn = guide.denoiser.to(device)
    elif weak is not None:
        guide_fn = weak_guide(main.denoiser, weak, weak_seed)
    uncond = None
    if settings.cfg_guidance != 1.0:
        if num_classes(main.denoiser.model) == 0:
            raise UserInputError("CFG needs a class-conditional model")
        if main.denoiser.null_cond is None:
            raise UserInputError("this model has no null class for the unconditional branch of CFG")
        uncond = main.denoiser  # the same network, given its null label
    w_cfg = settings.cfg_guidance
    denoiser = guided(main.denoiser, guide_fn, settings.guidance, uncond=uncond, w_uncond=w_cfg)
    schedule = main.denoiser.schedule
    sampler = SamplerSettings(
        steps=settings.num_steps,
        sigma_min=settings.sigma_min or schedule.sigma_min,
        sigma_max=settings.sigma_max or min(schedule.sigma_max, 80.0),
    )
    return generate_images(
        denoiser,
        settings.seeds,
        shape=main.sample_shape,
        class_label=settings.class_label,
        sampler=sampler,
        batch_size=settings.batch_size,
        device=device,
        decode=main.codec.decode if main.codec is not None else None,
    )
