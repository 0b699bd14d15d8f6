"""Text-to-image pipelines loaded with diffusers, as a denoiser, its decoder and its prompt encoders.

Families (read from the pipeline's model_index.json before any weights are loaded):

  family  pipeline                    network                     space
  if      IFPipeline (stage I)        UNet2DConditionModel, eps   64x64 pixels; learned variance dropped
  sd      StableDiffusionPipeline     UNet2DConditionModel        VAE latents; eps or v checkpoints
  sdxl    StableDiffusionXLPipeline   UNet2DConditionModel        VAE latents; pooled text and time ids
  sd3     StableDiffusion3Pipeline    SD3Transformer2DModel       VAE latents; rectified flow

Sources: a local folder written by save_pretrained (read with local_files_only, nothing downloaded), or
a hub name (owner/name) when the user gives one that is not a local path. A guide is loaded without
text encoders, tokenizers or VAE (it shares the main model's prompt embedding and decoder), so that a
second copy of the text encoder never enters memory; a guide may also be a single network folder
(config.json of a UNet2DConditionModel or SD3Transformer2DModel, e.g. an earlier training checkpoint),
which then samples with the main pipeline's parameterisation. Safety checkers and watermarkers are not
loaded: images are written as sampled.

Guide checks: what a denoiser's `Signature` says (sample shape, text conditioning) is checked by the one
compatibility check, `guidance.check_guide`, here already from the guide's config before its weights are
read; what a Signature cannot say (the family, the widths of the text embedding and added conditions, the
VAE's latent space) is checked here, in `check_guide_config` / `check_guide_fits`, also before sampling.
(`wrappers.pipelines` is the loader of class-conditional and unconditional pipelines.)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..denoiser import Signature
from ..errors import UserInputError
from ..guidance import check_guide
from .diffusers import schedule_from_scheduler
from .hf_logs import captured_logs, first_line
from .latents import LatentCodec
from .text import TEXT, TextDenoiser, conditioning_widths, native_shape


@dataclass(frozen=True)
class Family:
    name: str
    pipeline: str  # the diffusers pipeline class
    network: str  # the pipeline's attribute holding the denoising network
    network_class: str
    pixel: bool


FAMILIES = {
    f.pipeline: f
    for f in (
        Family("if", "IFPipeline", "unet", "UNet2DConditionModel", True),
        Family("sd", "StableDiffusionPipeline", "unet", "UNet2DConditionModel", False),
        Family("sdxl", "StableDiffusionXLPipeline", "unet", "UNet2DConditionModel", False),
        Family("sd3", "StableDiffusion3Pipeline", "transformer", "SD3Transformer2DModel", False),
    )
}
TEXT_PARTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
UNUSED_PARTS = ("safety_checker", "feature_extractor", "watermarker", "image_encoder")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise UserInputError(
            "text-to-image models need the extra: pip install 'autoguidance[text]'"
        ) from None
    return diffusers


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """from_pretrained's dtype argument: `dtype` where diffusers has renamed `torch_dtype`."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


@dataclass(frozen=True)
class Source:
    """Where a model comes from: `where` (a folder or a hub name), `local`, and what model_index.json
    (a pipeline) or config.json (a single network) says."""

    where: str
    local: bool
    kind: str  # "pipeline" or "network"
    config: dict

    @property
    def class_name(self) -> str:
        return str(self.config.get("_class_name", "?"))


def read_source(source: str | os.PathLike, flag: str = "--model") -> Source:
    """Read what a pipeline (or network) folder or hub name holds, without loading weights."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{flag} {text} is a file, not a diffusers pipeline folder")
        for kind, name in (("pipeline", "model_index.json"), ("network", "config.json")):
            f = path / name
            if f.is_file():
                try:
                    config = json.loads(f.read_text())
                except (OSError, ValueError) as exc:
                    raise UserInputError(f"{flag}: cannot read {f}: {first_line(exc)}") from None
                if not isinstance(config, dict):
                    raise UserInputError(f"{flag}: {f} is not a JSON object")
                return Source(str(path), True, kind, config)
        raise UserInputError(f"{flag} {text} holds no model_index.json (nor a network's config.json)")
    if not _HUB_NAME.fullmatch(text) or text.startswith((".", "/")):
        raise UserInputError(f"{flag} {text}: no such folder")
    diffusers = _diffusers()
    try:
        config = diffusers.DiffusionPipeline.load_config(text)
    except Exception as exc:  # hub errors come in many types; all mean "not there"
        raise UserInputError(
            f"{flag} {text}: not a local folder, and not found as a hub pipeline ({first_line(exc)})"
        ) from None
    return Source(text, False, "pipeline", dict(config))


def family_of(src: Source, flag: str = "--model") -> Family:
    """The text-to-image family of a pipeline; one-line errors for unconditional or unsupported ones."""
    if src.kind != "pipeline":
        raise UserInputError(f"{flag} {src.where} is a single network; give a whole pipeline folder")
    fam = FAMILIES.get(src.class_name)
    if fam is not None:
        return fam
    if not any(k.startswith("text_encoder") for k in src.config):
        raise UserInputError(
            f"{flag} {src.where} is a {src.class_name}, which takes no prompt (an unconditional or "
            "class-conditional model): use generate-diffusers"
        )
    if src.class_name in ("IFSuperResolutionPipeline", "StableDiffusionUpscalePipeline"):
        raise UserInputError(
            f"{flag} {src.where} is an upscaler ({src.class_name}): give it as --stage2/--stage3"
        )
    known = ", ".join(f"{f.pipeline} ({f.name})" for f in FAMILIES.values())
    raise UserInputError(f"{flag}: pipeline {src.class_name} is not supported; supported: {known}")


@dataclass
class TextPipeline:
    """A loaded text-to-image model: its denoiser (D(x, sigma, cond), cond the prompt embedding), the
    pipeline (text encoders, scheduler; None for a guide loaded as a single network) and decoder."""

    family: Family
    source: str
    pipe: Any
    network: nn.Module
    denoiser: TextDenoiser
    codec: LatentCodec | None
    vae_config: dict | None = None

    @property
    def vae_factor(self) -> int:
        """Pixels per latent pixel (8 for SD's VAE), 1 for pixel-space models."""
        if self.family.pixel:
            return 1
        blocks = (self.vae_config or {}).get("block_out_channels") or (1, 1, 1, 1)
        return 2 ** (len(blocks) - 1)

    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels the network was made for."""
        _, h, w = native_shape(self.network.config)
        return h * self.vae_factor, w * self.vae_factor

    def sample_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
        """(C, h, w) of what the denoiser samples for an image of height x width pixels; a one-line
        error unless the network can take that size."""
        dh, dw = self.default_size()
        height, width = int(height or dh), int(width or dw)
        cfg = self.network.config
        if hasattr(cfg, "patch_size"):  # a transformer: latents must tile into patches
            multiple = self.vae_factor * int(cfg.patch_size)
        else:  # a UNet halves the size at each level but the last
            multiple = self.vae_factor * 2 ** (len(cfg.block_out_channels) - 1)
        for name, v in (("height", height), ("width", width)):
            if v < multiple or v % multiple:
                raise UserInputError(
                    f"image {name} {v} must be a positive multiple of {multiple} for this model"
                )
        return int(cfg.in_channels), height // self.vae_factor, width // self.vae_factor

    def image_seq_len(self, shape: tuple[int, int, int]) -> int:
        """Image tokens of a transformer at `shape` (flow schedulers shift their schedule by it)."""
        patch = int(getattr(self.network.config, "patch_size", 1) or 1)
        return (shape[1] // patch) * (shape[2] // patch)


def _wrap(
    family: Family, source: str, pipe: Any, network: nn.Module, scheduler: Any, vae_cfg
) -> TextPipeline:
    prediction, schedule, scale = schedule_from_scheduler(scheduler)
    den = TextDenoiser(network, prediction, schedule, timestep_scale=scale)
    vae = getattr(pipe, "vae", None) if pipe is not None else None
    codec = LatentCodec.from_vae_config(vae) if vae is not None else None
    if vae is not None:
        vae_cfg = dict(vae.config)
    return TextPipeline(family, source, pipe, network, den, codec, vae_cfg)


def load_text_pipeline(
    source: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: str | None = None,
    flag: str = "--model",
    src: Source | None = None,
) -> TextPipeline:
    """The main model: a whole pipeline (text encoders, network, scheduler, VAE), in eval mode on
    `device`. Safety checkers, watermarkers and image encoders are not loaded."""
    src = src or read_source(source, flag)
    family = family_of(src, flag)
    skip = {k: None for k in UNUSED_PARTS if k in src.config}
    pipe = pretrained_pipeline(src, flag, dtype, variant, skip)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    network = getattr(pipe, family.network)
    network.eval()
    return _wrap(family, src.where, pipe, network, pipe.scheduler, _component_config(src, "vae"))


def pretrained_pipeline(src: Source, flag: str, dtype, variant, skip: dict) -> Any:
    diffusers = _diffusers()
    # Parts saved as absent ([null, null] in model_index.json, e.g. SD3 without its T5) stay absent.
    skip = {**{k: None for k, v in src.config.items() if isinstance(v, list) and v and v[0] is None}, **skip}
    with captured_logs() as logs:
        try:
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                src.where, local_files_only=src.local, variant=variant, **dtype_kwargs(dtype), **skip
            )
        except Exception as exc:  # missing or corrupt files surface as OSError, ValueError, ...
            raise UserInputError(f"{flag}: cannot load the pipeline {src.where}: {first_line(exc)}") from None
    _check_logs(logs, flag, src.where)
    return pipe


def _check_logs(logs: list[str], flag: str, where: str) -> None:
    """Weights the loader had to invent (missing from the files) make a random model: refuse it."""
    for message in logs:
        if "newly initialized" in message or "not initialized from the model checkpoint" in message:
            raise UserInputError(
                f"{flag}: {where} lacks weights its config needs (incomplete or mismatched files)"
            )


def load_guide(
    source: str | os.PathLike,
    main: TextPipeline,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: str | None = None,
    flag: str = "--guide",
) -> TextPipeline:
    """Another model as the guide: a pipeline of the main model's family (loaded without its text
    encoders, tokenizers and VAE), or a single network folder of the main model's network class (with
    the main pipeline's scheduler). Checked against the main model before its weights are loaded."""
    src = read_source(source, flag)
    diffusers = _diffusers()
    if src.kind == "network":
        if src.class_name != main.family.network_class:
            raise UserInputError(
                f"{flag} {src.where} is a {src.class_name}; the main model's network is a "
                f"{main.family.network_class}"
            )
        check_guide_config(main, src.config, None, flag)
        with captured_logs() as logs:
            try:
                cls = getattr(diffusers, src.class_name)
                network = cls.from_pretrained(
                    src.where, local_files_only=src.local, variant=variant, **dtype_kwargs(dtype)
                )
            except Exception as exc:
                raise UserInputError(
                    f"{flag}: cannot load the network {src.where}: {first_line(exc)}"
                ) from None
        _check_logs(logs, flag, src.where)
        network.to(device).eval()
        guide = _wrap(main.family, src.where, None, network, main.pipe.scheduler, main.vae_config)
        check_guide_fits(main, guide, flag)
        return guide
    family = family_of(src, flag)
    if family.name != main.family.name:
        raise UserInputError(
            f"{flag} {src.where} is of family {family.name} ({family.pipeline}), the main model of family "
            f"{main.family.name} ({main.family.pipeline}): a guide must be of the main model's family"
        )
    net_cfg, vae_cfg = _component_config(src, family.network), _component_config(src, "vae")
    check_guide_config(main, net_cfg, vae_cfg, flag)
    skip = {k: None for k in (*TEXT_PARTS, "vae", *UNUSED_PARTS) if k in src.config}
    pipe = pretrained_pipeline(src, flag, dtype, variant, skip)
    network = getattr(pipe, family.network)
    network.to(device).eval()
    guide = _wrap(family, src.where, pipe, network, pipe.scheduler, vae_cfg or main.vae_config)
    check_guide_fits(main, guide, flag)
    return guide


def _component_config(src: Source, name: str) -> dict | None:
    f = Path(src.where) / name / "config.json"
    if src.local and f.is_file():
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            return None
    return None


class _Config:
    """Attribute view of a config dict (what conditioning_widths reads)."""

    def __init__(self, d: dict):
        self.__dict__.update(d)

    def __getattr__(self, name: str) -> Any:
        return None


def check_guide_config(main: TextPipeline, net_cfg: dict | None, vae_cfg: dict | None, flag: str) -> None:
    """The guide's network and VAE configs (read before loading weights) against the main model."""
    if net_cfg is not None:
        _compare(main, _Config(net_cfg), vae_cfg, flag)


def check_guide_fits(main: TextPipeline, guide: TextPipeline, flag: str = "--guide") -> None:
    """A guide must denoise the main model's samples (same channels, same latent space) and take its
    prompt embedding (same text widths): autoguidance compares two models of one task (paper Sec. 3)."""
    _compare(main, guide.network.config, guide.vae_config, flag)


def _compare(main: TextPipeline, cfg: Any, vae_cfg: dict | None, flag: str) -> None:
    try:  # the samples' shape and the kind of conditioning: the one compatibility check
        check_guide(main.denoiser, Signature(native_shape(cfg), 0, TEXT))
    except UserInputError as exc:
        raise UserInputError(f"{flag}: {exc}") from None
    a, b = conditioning_widths(main.network), conditioning_widths(type("N", (), {"config": cfg})())
    for key, value in a.items():
        if b.get(key) != value:
            raise UserInputError(
                f"{flag} takes {key} {b.get(key)}, the main model {value}: not the same text conditioning"
            )
    if vae_cfg is not None and main.vae_config is not None:
        for key in ("latent_channels", "scaling_factor", "shift_factor"):
            if vae_cfg.get(key) != main.vae_config.get(key):
                theirs, ours = vae_cfg.get(key), main.vae_config.get(key)
                raise UserInputError(
                    f"{flag}'s VAE has {key} {theirs}, the main model's {ours}: not the same latent space"
                )


def release_text_encoders(tp: TextPipeline) -> None:
    """Drop the text encoders once the prompt is encoded (their memory is the largest part of IF and SD3
    on a GPU); encoding another prompt then needs the pipeline reloaded."""
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(tp.pipe, name, None) is not None:
            setattr(tp.pipe, name, None)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
