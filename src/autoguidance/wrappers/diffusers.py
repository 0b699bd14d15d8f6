"""diffusers models (UNets, DiT/SD3/Flux-style transformers) as EDM denoisers, and pipelines' parts.

`DiffusersDenoiser` calls model(x_t, timestep=t, **conditioning).sample and converts its eps, v, flow or
sample prediction with `parameterization`. Conditioning: None, a tensor of class labels (given as
`label_arg`, class_labels by default), or a dict of keyword tensors passed as they are (for example
{"encoder_hidden_states": text_embeddings}). Models that also predict the variance (learned sigma, twice
the input channels, as DiT) have the second half of their output dropped.

`from_pipeline(pipe)` reads the parameterisation from the pipeline's scheduler (its prediction_type and
alphas_cumprod, or a flow-matching scheduler) and takes the pipeline's VAE as the image decoder, so that
a main model from one pipeline and a guide from another (an earlier checkpoint, a smaller sibling, the
base model) sample together through this package's samplers and guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..denoiser import Signature
from ..errors import UserInputError
from .latents import LatentCodec
from .parameterization import DiscreteVP, PredictionDenoiser, RectifiedFlow, Schedule, parse_prediction


class DiffusersDenoiser(PredictionDenoiser):
    def __init__(
        self,
        model: nn.Module,
        prediction: str,
        schedule: Schedule,
        *,
        timestep_scale: float = 1.0,
        null_cond: Any = None,
        label_arg: str = "class_labels",
        dtype: torch.dtype | None = None,
    ):
        super().__init__(model, prediction, schedule, timestep_scale, null_cond)
        self.label_arg = label_arg
        if dtype is not None:
            model.to(dtype)

    def call_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        if cond is None:
            kwargs = {}
        elif isinstance(cond, dict):
            kwargs = {
                k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
                for k, v in cond.items()
            }
        elif torch.is_tensor(cond):
            kwargs = {self.label_arg: cond}
        else:
            raise UserInputError(f"conditioning must be None, a tensor or a dict, got {type(cond).__name__}")
        out = self.model(x_t.to(dtype), timestep=t, **kwargs)
        out = out.sample if hasattr(out, "sample") else out[0]
        if out.shape[1] == 2 * x_t.shape[1]:  # learned variance (DiT): keep the mean prediction
            out = out[:, : x_t.shape[1]]
        return out.to(x_t.dtype)


@dataclass
class PipelineParts:
    denoiser: DiffusersDenoiser
    codec: LatentCodec | None  # None for pixel-space models
    sample_shape: tuple[int, ...]  # (C, H, W) of what the denoiser samples


def schedule_from_scheduler(scheduler: Any) -> tuple[str, Schedule, float]:
    """(prediction, schedule, timestep_scale) from a diffusers scheduler; one-line error if unknown."""
    cfg = getattr(scheduler, "config", None)
    name = type(scheduler).__name__
    if "FlowMatch" in name:
        n = float(getattr(cfg, "num_train_timesteps", 1000) or 1000)
        return "flow", RectifiedFlow(), n
    pred = getattr(cfg, "prediction_type", None)
    if pred is None:
        raise UserInputError(f"scheduler {name} states no prediction_type: cannot tell the parameterisation")
    try:
        prediction = parse_prediction(pred)
    except UserInputError:
        raise UserInputError(f"scheduler {name} has unknown prediction_type {pred!r}") from None
    ab = getattr(scheduler, "alphas_cumprod", None)
    if ab is None:
        raise UserInputError(f"scheduler {name} has no alphas_cumprod: cannot map sigma to timesteps")
    return prediction, DiscreteVP(torch.as_tensor(ab)), 1.0


def from_pipeline(pipe: Any, *, null_cond: Any = None, dtype: torch.dtype | None = None) -> PipelineParts:
    """The denoiser, decoder and sample shape of a diffusers pipeline (DDPM, DiT, SD3, ...)."""
    model = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if model is None:
        raise UserInputError(f"pipeline {type(pipe).__name__} has neither a unet nor a transformer")
    prediction, schedule, scale = schedule_from_scheduler(pipe.scheduler)
    den = DiffusersDenoiser(
        model, prediction, schedule, timestep_scale=scale, null_cond=null_cond, dtype=dtype
    )
    cfg = model.config
    channels = getattr(cfg, "in_channels", None)
    size = getattr(cfg, "sample_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    vae = getattr(pipe, "vae", None)
    codec = LatentCodec.from_vae_config(vae) if vae is not None else None
    shape = (int(channels), int(size), int(size))
    den.signature = Signature(shape, num_classes(model))
    return PipelineParts(den, codec, shape)


def num_classes(model: nn.Module) -> int:
    """Class labels a model takes (0: none): DiT's num_embeds_ada_norm, a UNet's num_class_embeds."""
    cfg = model.config
    return int(getattr(cfg, "num_embeds_ada_norm", None) or getattr(cfg, "num_class_embeds", None) or 0)
