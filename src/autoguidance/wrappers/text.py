"""Text conditioning as the denoiser's `cond`: prompt embeddings in, D(x, sigma, cond) out.

A text-to-image network is a denoiser like any other (the package's convention, EDM's D(x; sigma, c));
its condition c is the prompt's embedding, a dict of tensors that passes through the samplers and
`guidance.GuidedDenoiser` untouched and reaches the network as keyword arguments:

  family   cond (one row per prompt; broadcast over the batch)
  if       {"encoder_hidden_states": T5 hidden states (1, 77, 4096)}
  sd       {"encoder_hidden_states": CLIP hidden states (1, 77, 768 or 1024)}
  sdxl     {"encoder_hidden_states": both CLIPs' hidden states (1, 77, 2048),
            "added_cond_kwargs": {"text_embeds": pooled (1, 1280), "time_ids": (1, 6)}}
  sd3      {"encoder_hidden_states": CLIP-L + CLIP-G + T5 tokens (1, 77 + L, 4096),
            "pooled_projections": (1, 2048)}

The negative (or empty) prompt's embedding is the network's `null_cond`: what it receives for cond=None,
i.e. classifier-free guidance's unconditional branch (`denoiser.without_condition`). An autoguidance
guide is called with the same `cond` as the main model (conditional against conditional, paper Sec. 3),
so the prompt is encoded once, by the main pipeline's text encoders, and shared. A one-row embedding is
shared by the whole batch (the denoiser convention: a tensor whose first dimension is not the batch is
shared), and `TextDenoiser` broadcasts it to the network's batch. Text denoisers declare
`Signature(shape, classes=0, conditioning="text")`: `guidance.check_guide` then accepts a guide of the
same kind only, and `guidance.guided` lets the main model be its own CFG term (cond=None).
"""

from __future__ import annotations

from typing import Any

import torch

from ..denoiser import Signature
from ..errors import UserInputError
from .diffusers import DiffusersDenoiser

FAMILIES = ("if", "sd", "sdxl", "sd3")
TEXT = "text"  # the conditioning text denoisers declare in their Signature


def _map_tensors(cond: Any, fn) -> Any:
    if torch.is_tensor(cond):
        return fn(cond)
    if isinstance(cond, dict):
        return {k: _map_tensors(v, fn) for k, v in cond.items()}
    return cond


def expand_cond(cond: Any, batch: int) -> Any:
    """Every tensor of a (nested) conditioning dict with one row broadcast to `batch` rows (a view);
    tensors that already have `batch` rows pass as they are. UserInputError for any other row count."""

    def expand(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0 or t.shape[0] == batch:
            return t
        if t.shape[0] != 1:
            raise UserInputError(f"conditioning has {t.shape[0]} rows for a batch of {batch}")
        return t.expand(batch, *t.shape[1:])

    return _map_tensors(cond, expand)


def cast_cond(cond: Any, dtype: torch.dtype, device: torch.device | None = None) -> Any:
    """Floating-point tensors of a (nested) conditioning dict in the network's dtype (and device)."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device=device)

    return _map_tensors(cond, cast)


def native_shape(config: Any) -> tuple[int, int, int]:
    """(C, h, w) of the samples a diffusers network was made for, from its config."""
    size = getattr(config, "sample_size", None)
    if size is None or getattr(config, "in_channels", None) is None:
        raise UserInputError("the network's config states no in_channels or sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(config.in_channels), int(h), int(w)


class TextDenoiser(DiffusersDenoiser):
    """A text-conditioned diffusers network (UNet2DConditionModel, SD3Transformer2DModel) as an EDM
    denoiser. `cond` is a dict of keyword tensors (nested dicts allowed, e.g. SDXL's added_cond_kwargs),
    each with one row (shared by the batch) or one row per sample; cond=None gives `null_cond`, the
    negative prompt's embedding. A network with learned variance (IF: 6 output channels for 3) keeps the
    mean (eps) half, as `DiffusersDenoiser` does. Its `signature` is the network's native sample shape,
    no class labels, text conditioning."""

    def __init__(self, model: torch.nn.Module, prediction: str, schedule: Any, **kwargs: Any):
        super().__init__(model, prediction, schedule, **kwargs)
        self.signature = Signature(native_shape(model.config), 0, TEXT)

    def call_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        if cond is None:
            raise UserInputError("this text-conditioned model has no negative-prompt embedding (null_cond)")
        if not isinstance(cond, dict):
            raise UserInputError(f"text conditioning must be a dict of tensors, got {type(cond).__name__}")
        p = next(self.model.parameters())
        cond = cast_cond(expand_cond(cond, x_t.shape[0]), p.dtype, p.device)
        return super().call_model(x_t, t, cond)


def sdxl_time_ids(height: int, width: int) -> torch.Tensor:
    """SDXL's micro-conditioning (Podell et al. 2023, Sec. 2.2): original size, crop top-left and
    target size, here (h, w, 0, 0, h, w) for an uncropped image generated at its native size."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


@torch.no_grad()
def encode_prompt(
    family: str,
    pipe: Any,
    prompt: str,
    negative_prompt: str | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    device: torch.device | str | None = None,
    max_sequence_length: int = 256,
) -> tuple[dict, dict]:
    """(cond, null_cond) for one prompt: the prompt's and the negative prompt's embeddings, computed by
    the pipeline's own `encode_prompt` (its tokenisation, truncation and encoder conventions). A
    negative prompt of None is the pipeline's own default: the empty prompt, or zeros where SDXL's
    config says `force_zeros_for_empty_prompt`. `height`/`width` (pixels) feed SDXL's time ids."""
    if family not in FAMILIES:
        raise UserInputError(f"unknown text-to-image family {family!r}; known: {', '.join(FAMILIES)}")
    if not isinstance(prompt, str):
        raise UserInputError("the prompt must be a string")
    if family == "if":
        pos, neg = pipe.encode_prompt(
            prompt,
            do_classifier_free_guidance=True,
            num_images_per_prompt=1,
            device=device,
            negative_prompt=negative_prompt,
            clean_caption=False,
        )
        return {"encoder_hidden_states": pos}, {"encoder_hidden_states": neg}
    if family == "sd":
        pos, neg = pipe.encode_prompt(prompt, device, 1, True, negative_prompt)
        return {"encoder_hidden_states": pos}, {"encoder_hidden_states": neg}
    if family == "sdxl":
        return _encode_sdxl(pipe, prompt, negative_prompt, height, width, device)
    pos, neg, pooled, neg_pooled = pipe.encode_prompt(
        prompt,
        None,
        None,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negative_prompt,
        max_sequence_length=max_sequence_length,
    )
    return (
        {"encoder_hidden_states": pos, "pooled_projections": pooled},
        {"encoder_hidden_states": neg, "pooled_projections": neg_pooled},
    )


def _encode_sdxl(
    pipe: Any, prompt: str, negative_prompt: str | None, height, width, device
) -> tuple[dict, dict]:
    """SDXL: both CLIPs' hidden states, the pooled embedding and the time ids as added conditions."""
    if height is None or width is None:
        raise UserInputError("SDXL's conditioning needs the image height and width")
    pos, neg, pooled, neg_pooled = pipe.encode_prompt(
        prompt,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negative_prompt,
    )
    ids = sdxl_time_ids(height, width).to(pos.device)
    return (
        {"encoder_hidden_states": pos, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}},
        {"encoder_hidden_states": neg, "added_cond_kwargs": {"text_embeds": neg_pooled, "time_ids": ids}},
    )


def conditioning_widths(network: torch.nn.Module) -> dict[str, Any]:
    """The widths of the text conditioning a network takes, from its config: two networks can share a
    prompt embedding only if these agree (a guide must take the main model's conditioning)."""
    cfg = network.config
    if getattr(cfg, "joint_attention_dim", None) is not None:  # SD3-style MMDiT
        return {
            "text width": cfg.joint_attention_dim,
            "pooled text width": getattr(cfg, "pooled_projection_dim", None),
        }
    cross = getattr(cfg, "cross_attention_dim", None)
    width = getattr(cfg, "encoder_hid_dim", None) or cross
    widths = {"text width": tuple(width) if isinstance(width, (list, tuple)) else width}
    added = getattr(cfg, "addition_embed_type", None)
    if added is not None:
        widths["added conditioning"] = added
        if added == "text_time":  # SDXL: pooled text + time ids, as one projected vector
            widths["pooled text + time ids width"] = getattr(
                cfg, "projection_class_embeddings_input_dim", None
            )
            widths["time id width"] = getattr(cfg, "addition_time_embed_dim", None)
    return widths


def is_text_conditioned(network: torch.nn.Module) -> bool:
    """Whether a diffusers network takes text embeddings (cross-attention or joint attention)."""
    cfg = getattr(network, "config", None)
    return cfg is not None and (
        getattr(cfg, "joint_attention_dim", None) is not None
        or getattr(cfg, "cross_attention_dim", None) is not None
    )
