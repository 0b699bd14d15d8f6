"""Text-to-image generation with autoguidance and classifier-free guidance, and the paper's Figure 5-6
interpolation grid, through the package's one builder (`guidance.guided`) and one generation loop
(`generate.generate_images`).

The combination is the paper's "several terms" formula (DeepFloyd IF experiment, Sec. 5.3 / App. B.3,
after Liu et al.), with D1 the main model on the prompt:

    D = D1 + (w_ag - 1)(D1 - D_guide(prompt)) + (w_cfg - 1)(D1 - D1(negative prompt))

i.e. `guided(main, guide, w_ag, uncond=main, w_uncond=w_cfg)`: the CFG term is the main model itself,
called with cond=None, which it maps to its null_cond, the negative prompt's embedding; the guide gets the
main model's prompt embedding. Interpolating pure CFG (alpha = 0) and pure autoguidance (alpha = 1) at
total strength w (App. B.3, `guidance.interpolation_weights`): w_cfg = (1 - alpha)(w - 1) + 1,
w_ag = alpha (w - 1) + 1. The guidance interval is decided once per sampler step by the core (the step
is sampler context, `denoiser.current_step`). The prompt's embedding is the loop's `cond` (one row,
shared by every seed), the model's (or its scheduler's) noise levels its `sigmas`, and IF's dynamic
thresholding a wrapper denoiser (`thresholding.Thresholded`) around the guided one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..denoiser import Denoiser
from ..errors import UserInputError, check_int
from ..generate import check_seeds, generate_images
from ..guidance import check_interval, check_weight, guided, interpolation_weights
from ..images import labelled_grid, to_uint8
from ..sampling import SamplerSettings
from .sigmas import sampler_sigmas
from .text import encode_prompt
from .text_pipelines import TextPipeline
from .thresholding import Clip, Thresholded, clip_from_scheduler


def term_weights(guidance: float, cfg: float, alpha: float | None) -> tuple[float, float]:
    """(w_cfg, w_ag). Without alpha the two weights as given; with alpha, `guidance` is the total
    strength w split as in the paper's App. B.3 (`guidance.interpolation_weights`)."""
    guidance, cfg = check_weight(guidance, "guidance weight"), check_weight(cfg, "CFG weight")
    if alpha is None:
        return cfg, guidance
    if cfg != 1.0:
        raise UserInputError("with --alpha, --guidance is the total strength w: leave --cfg out")
    w_ag, w_cfg = interpolation_weights(guidance, alpha)
    return w_cfg, w_ag


def text_guided(
    main: Denoiser,
    guide: Denoiser | None,
    guidance: float = 1.0,
    cfg: float = 1.0,
    alpha: float | None = None,
    interval: tuple[float, float] | None = None,
) -> Denoiser:
    """The several-terms denoiser above, built by `guidance.guided`: the guide on the prompt at w_ag and
    the main model on its negative prompt (`uncond=main`) at w_cfg; `term_weights` reads the weights."""
    w_cfg, w_ag = term_weights(guidance, cfg, alpha)
    return guided(main, guide, w_ag, uncond=main, w_uncond=w_cfg, interval=interval)


@dataclass
class TextSettings:
    """Everything that decides a text-to-image run (all of it goes into the run's JSON)."""

    prompt: str
    seeds: list[int]
    negative_prompt: str | None = None
    guidance: float = 1.0  # w_ag; with alpha, the total strength w
    cfg: float = 1.0  # w_cfg
    alpha: float | None = None
    interval: tuple[float, float] | None = None
    steps: int = 32
    solver: str = "heun"
    schedule: str = "edm"  # or "scheduler": the pipeline's scheduler's own sigmas
    sigma_min: float | None = None
    sigma_max: float | None = None
    batch_size: int = 4
    height: int | None = None
    width: int | None = None
    threshold: bool | None = None  # None: as the pipeline's scheduler says (IF: dynamic thresholding)
    max_sequence_length: int = 256

    def check(self) -> None:
        """One-line errors for bad settings, before anything is loaded (field names as messages say
        them; the CLI renames them to its flags)."""
        if not self.seeds:
            raise UserInputError("no seeds")
        self.seeds = check_seeds(self.seeds)
        SamplerSettings(steps=self.steps, solver=self.solver)  # the sampler's own checks
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("max_sequence_length", self.max_sequence_length, minimum=1)
        term_weights(self.guidance, self.cfg, self.alpha)
        self.interval = check_interval(self.interval)
        for name in ("sigma_min", "sigma_max"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise UserInputError(f"{name} must be a positive number, got {v}")

    def record(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        w_cfg, w_ag = term_weights(self.guidance, self.cfg, self.alpha)
        d["weights"] = {"cfg": w_cfg, "autoguidance": w_ag}
        return d


@dataclass
class TextModels:
    """The main model (its pipeline; `main` the denoiser to sample, e.g. a LoRA view) and the
    autoguidance guide (another model, a LoRA view or a training-free degradation), or None."""

    pipeline: TextPipeline
    main: Denoiser
    guide: Denoiser | None = None


def clip_for(tp: TextPipeline, threshold: bool | None) -> Clip | None:
    clip = clip_from_scheduler(tp.pipe.scheduler) if tp.pipe is not None else None
    if threshold is None:
        return clip if tp.family.pixel else None
    if not threshold:
        return None
    return clip or Clip(True)


@dataclass
class Prepared:
    """What sampling needs, computed once per run: conditioning, sigmas, shape, x0 clipping."""

    cond: dict
    sigmas: torch.Tensor
    shape: tuple[int, int, int]
    clip: Clip | None


def prepare(models: TextModels, settings: TextSettings, device: torch.device | str) -> Prepared:
    """Encode the prompt once (the main pipeline's text encoders; the guide shares the embedding), set
    the negative prompt's embedding as the main denoiser's null_cond, and pick sigmas and shape."""
    tp = models.pipeline
    shape = tp.sample_shape(settings.height, settings.width)
    height, width = shape[1] * tp.vae_factor, shape[2] * tp.vae_factor
    cond, null = encode_prompt(
        tp.family.name,
        tp.pipe,
        settings.prompt,
        settings.negative_prompt,
        height=height,
        width=width,
        device=torch.device(device),
        max_sequence_length=settings.max_sequence_length,
    )
    tp.denoiser.null_cond = null
    sigmas = sampler_sigmas(
        settings.schedule,
        settings.steps,
        tp.denoiser.schedule,
        tp.pipe.scheduler,
        sigma_min=settings.sigma_min,
        sigma_max=settings.sigma_max,
        image_seq_len=tp.image_seq_len(shape),
    )
    return Prepared(cond, sigmas, shape, clip_for(tp, settings.threshold))


def _raw(samples: torch.Tensor) -> torch.Tensor:
    """The loop's `decode` that keeps the samples as float32 (decoded later, or upscaled by IF)."""
    return samples.float()


def sample_seeds(
    denoiser: Denoiser,
    prepared: Prepared,
    seeds: Sequence[int],
    *,
    solver: str = "heun",
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Samples (N, C, h, w) float32 on the CPU from the one generation loop (`generate.generate_images`:
    each seed's noise from its own generator, the prompt's one-row embedding shared by the batch)."""
    if prepared.clip is not None:
        denoiser = Thresholded(denoiser, prepared.clip)
    samples, _ = generate_images(
        denoiser,
        seeds,
        shape=prepared.shape,
        classes=0,
        cond=prepared.cond,
        sampler=SamplerSettings(steps=len(prepared.sigmas) - 1, solver=solver),
        sigmas=prepared.sigmas,
        batch_size=batch_size,
        device=device,
        decode=_raw,
    )
    return samples


def to_images(tp: TextPipeline, samples: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3): pixels in [-1, 1] (IF) directly, latents through the main pipeline's VAE."""
    if tp.codec is None:
        return to_uint8(samples)
    return torch.cat([tp.codec.decode(samples[i : i + 1]) for i in range(len(samples))])


def generate_text(
    models: TextModels, settings: TextSettings, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, Prepared]:
    """(uint8 images (N, H, W, 3), raw samples (N, C, h, w), what was prepared) for settings.seeds."""
    settings.check()
    den = text_guided(
        models.main, models.guide, settings.guidance, settings.cfg, settings.alpha, settings.interval
    )
    prepared = prepare(models, settings, device)
    samples = sample_seeds(
        den, prepared, settings.seeds, solver=settings.solver, batch_size=settings.batch_size, device=device
    )
    return to_images(models.pipeline, samples), samples, prepared


@dataclass
class Grid:
    """The Figure 5-6 grid: cells[r, k] is the image at weight ws[r] and interpolation alphas[k]."""

    ws: list[float]
    alphas: list[float]
    cells: torch.Tensor  # uint8 (R, K, H, W, 3)
    samples: torch.Tensor  # float (R, K, C, h, w)

    def labelled(self, scale: int = 1) -> np.ndarray:
        rows = [f"w={w:g}" for w in self.ws]
        return labelled_grid(self.cells, rows, column_labels(self.alphas), pad=2, scale=scale)


def column_labels(alphas: Sequence[float]) -> list[list[str]]:
    """The grid's column headings: alpha, with its ends named (0: pure CFG, 1: pure autoguidance)."""
    return [[f"alpha={a:g}" + (" (CFG)" if a == 0 else " (autoguidance)" if a == 1 else "")] for a in alphas]


def check_grid(ws: Sequence[float], alphas: Sequence[float]) -> tuple[list[float], list[float]]:
    ws = [check_weight(w, "grid weight") for w in ws]
    alphas = [float(a) for a in alphas]
    if not ws or not alphas:
        raise UserInputError("the grid needs at least one weight and one alpha")
    for a in alphas:
        interpolation_weights(1.0, a)  # alpha in [0, 1]
    return ws, alphas


def interpolation_grid(
    models: TextModels,
    settings: TextSettings,
    ws: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    device: torch.device | str = "cpu",
) -> tuple[Grid, Prepared]:
    """One prompt, one seed (settings.seeds[0]): rows w, columns alpha from pure CFG (0) to pure
    autoguidance (1), as the paper's Figures 5 and 6. The prompt is encoded once; a row at w = 1 is the
    unguided image (every term has weight 1), sampled once and repeated."""
    settings.check()
    if models.guide is None:
        raise UserInputError(
            "the interpolation grid needs a guide (--guide, --guide-lora, ... or --weak-guide)"
        )
    if len(settings.seeds) != 1:
        raise UserInputError(f"the grid is for one seed, got {len(settings.seeds)}")
    ws, alphas = check_grid(ws, alphas)
    prepared = prepare(models, settings, device)
    rows = []
    for w in ws:
        row: list[torch.Tensor] = []
        for a in alphas:
            if w == 1.0 and row:
                row.append(row[0])  # all weights 1: the main model alone, whatever alpha
                continue
            den = text_guided(models.main, models.guide, w, 1.0, a, settings.interval)
            one = sample_seeds(den, prepared, settings.seeds[:1], solver=settings.solver, device=device)
            row.append(one[0])
        rows.append(torch.stack(row))
    samples = torch.stack(rows)
    r, k = samples.shape[:2]
    images = to_images(models.pipeline, samples.reshape(r * k, *samples.shape[2:]))
    return Grid(list(ws), list(alphas), images.reshape(r, k, *images.shape[1:]), samples), prepared


def describe(models: TextModels) -> dict[str, Any]:
    tp = models.pipeline
    return {
        "family": tp.family.name,
        "pipeline": tp.family.pipeline,
        "network": type(tp.network).__name__,
        "prediction": tp.denoiser.prediction,
        "schedule": type(tp.denoiser.schedule).__name__,
    }
