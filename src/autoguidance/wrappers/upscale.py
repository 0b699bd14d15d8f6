"""DeepFloyd IF's stages II and III on the guided stage-I images, as the paper's Figures 5-6 show them.

The paper guides stage I only (64x64 pixels); the super-resolution stages then run as released: stage
II (IFSuperResolutionPipeline, 64 -> 256, conditioned on the same T5 embedding, reused here) and stage
III (the Stable Diffusion x4 upscaler, 256 -> 1024, with its own CLIP text encoder), each with its own
sampler and classifier-free guidance at their pipelines' defaults (stage III: noise level 100, as IF's
instructions run it). The stage-I images enter unchanged
(the float samples in [-1, 1], not re-quantised PNGs); each image's upscaling noise comes from a
generator seeded by that image's seed, so an image depends on its seed only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from ..images import to_uint8
from .text_pipelines import UNUSED_PARTS, pretrained_pipeline, read_source

STAGES = {"--stage2": "IFSuperResolutionPipeline", "--stage3": "StableDiffusionUpscalePipeline"}


def load_stage(
    source: str | os.PathLike,
    flag: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: str | None = None,
) -> Any:
    """Stage II (`flag` "--stage2", without its T5: stage I's embedding is reused) or stage III
    ("--stage3", with its CLIP); a one-line error for a pipeline of another kind."""
    want = STAGES[flag]
    src = read_source(source, flag)
    if src.kind != "pipeline" or src.class_name != want:
        raise UserInputError(f"{flag} {src.where} is a {src.class_name}, not a {want}")
    skip = {k: None for k in UNUSED_PARTS if k in src.config}
    if flag == "--stage2":
        skip.update({k: None for k in ("text_encoder", "tokenizer") if k in src.config})
    pipe = pretrained_pipeline(src, flag, dtype, variant, skip)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class Upscaled:
    stage2: torch.Tensor | None  # uint8 (N, 4h, 4w, 3)
    stage3: torch.Tensor | None  # uint8 (N, 16h, 16w, 3)


@torch.no_grad()
def upscale(
    stage1: torch.Tensor,
    seeds: list[int],
    prompt: str,
    negative_prompt: str | None,
    cond: dict,
    null_cond: dict,
    stage2: Any,
    stage3: Any = None,
    *,
    steps2: int | None = None,
    steps3: int | None = None,
    device: str | torch.device = "cpu",
) -> Upscaled:
    """Stage-I samples (N, 3, 64, 64) in [-1, 1] -> stage II (and III) images, one seed each."""
    dev = torch.device(device)
    emb, neg = cond["encoder_hidden_states"], null_cond["encoder_hidden_states"]
    dtype = next(stage2.unet.parameters()).dtype
    out2, out3 = [], []
    for i, seed in enumerate(seeds):
        g = torch.Generator(dev).manual_seed(int(seed))
        kw = {} if steps2 is None else {"num_inference_steps": steps2}
        x = stage2(
            image=stage1[i : i + 1].to(dev, dtype),
            prompt_embeds=emb.to(dev, dtype),
            negative_prompt_embeds=neg.to(dev, dtype),
            generator=g,
            output_type="pt",
            clean_caption=False,
            **kw,
        ).images
        out2.append(to_uint8(x.float().clamp(-1, 1)).cpu())
        if stage3 is not None:
            kw = {} if steps3 is None else {"num_inference_steps": steps3}
            y = stage3(
                prompt=prompt,
                negative_prompt=negative_prompt,
                image=(x.float().clamp(-1, 1) + 1) / 2,
                generator=g,
                noise_level=100,
                output_type="np",
                **kw,
            ).images
            out3.append(torch.from_numpy(np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)))
    return Upscaled(torch.cat(out2), torch.cat(out3) if out3 else None)
