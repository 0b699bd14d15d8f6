"""Weak guides made from the main network itself, without training (autoguidance's "bad version").

Autoguidance needs a guide that makes the same kind of errors as the main model, only more of them
(paper Sec. 3). Besides a smaller or shorter-trained network (a file: an earlier snapshot, or a shorter
EMA exported by `autoguidance phema`), these degrade the main network at inference time:

  dropout       a fixed random subnetwork: each residual branch's activations multiplied by a Bernoulli
                mask of keep-probability 1 - p, scaled by 1 / (1 - p), where EDM2 applies its training
                dropout (the input of a block's second convolution): inference-time dropout.
  input_noise   the guide sees x + r sigma n and is told sigma' = sigma sqrt(1 + r^2): a noisier view of
                the same sample, so it denoises with less information. n is fresh Gaussian noise for
                every sample and evaluation, drawn from a generator seeded by the sample's own values.
  skip_blocks   named blocks reduced to their skip path (EDM2 blocks) or to the identity (diffusers'
                residual blocks, SD3's joint blocks, other same-shape modules).
  attention     self-attention at a raised temperature (`guides.attention`).
  quantize      weights rounded to `bits` bits per output row (uniform, symmetric).
  precision     the network run in bfloat16 or float16.

Each is a `torch.nn.Module` denoiser D(x, sigma, cond) that exposes the main network's `config` (when
it has one), so it plugs in wherever a guide network does. Random ones (dropout, input noise) draw their
randomness once, from their own generator seeded by `seed`: the guide is a fixed function, the same for
every sample, step and batch size. Each equals the main network exactly at zero degradation.

These are the paper's Section 4 degradations as well (its sweeps use the same classes): dropout at the
place EDM2's networks are trained with it, and input noise independent across samples and steps, i.e.
an input that is noisier than the network is told, which is what "a model that sees noisier images" is.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..denoiser import expand_sigma
from ..errors import UserInputError
from ..nets.mp import pixel_norm
from ..nets.unet import CLIP_ACT, Block, resample
from .attention import AttentionTemperatureGuide
from .base import DerivedGuide, hooked, named_modules, split_names

WEAK_GUIDE_KINDS = ("dropout", "input-noise", "skip", "quantize", "precision", "attention")


class DropoutGuide(DerivedGuide):
    """Inference-time dropout with masks fixed per seed on each residual branch (EDM2 blocks: the input
    of conv_res1, where EDM2 applies its training dropout; other networks: every nn.Dropout module)."""

    def __init__(self, net: nn.Module, p: float, seed: int = 0):
        super().__init__(net)
        if not 0.0 <= p < 1.0:
            raise UserInputError(f"dropout probability must lie in [0, 1), got {p}")
        self.p, self.seed = float(p), int(seed)
        self._masks: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        targets = [(n + ".conv_res1", m.conv_res1) for n, m in net.named_modules() if isinstance(m, Block)]
        if not targets:
            targets = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Dropout)]
        if not targets and p > 0:
            raise UserInputError("dropout guide: the network has neither EDM2 blocks nor dropout layers")
        self._targets = targets

    def _mask(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        key = (name, shape)
        if key not in self._masks:  # one generator per site: masks do not depend on evaluation order
            digest = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            keep = torch.rand(shape, generator=g) >= self.p
            self._masks[key] = keep.to(torch.float32) / (1 - self.p)
        return self._masks[key].to(device=like.device, dtype=like.dtype)

    def _hook(self, name: str):
        def pre(module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            return (x * self._mask(name, tuple(x.shape[1:]), x), *args[1:])

        return pre

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.p == 0:
            return self.net(x, sigma, cond)
        with hooked(lambda: [m.register_forward_pre_hook(self._hook(n)) for n, m in self._targets]):
            return self.net(x, sigma, cond)


class InputNoiseGuide(DerivedGuide):
    """D_guide(x; sigma) = D(x + r sigma n; sigma sqrt(1 + r^2)), n ~ N(0, I) independent per sample and
    evaluation: each sample's n comes from a generator seeded by `seed` and a hash of that sample's x,
    so the guide is deterministic and a sample's result does not depend on its batch."""

    def __init__(self, net: nn.Module, ratio: float, seed: int = 0):
        super().__init__(net)
        if not ratio >= 0:
            raise UserInputError(f"input-noise ratio must be >= 0, got {ratio}")
        self.ratio, self.seed = float(ratio), int(seed)

    @classmethod
    def raised_by(cls, net: nn.Module, noise: float, seed: int = 0) -> InputNoiseGuide:
        """The guide whose input noise level is raised by the factor f = 1 + noise (noise 0.1: 10% more
        noise than the network is told): r = sqrt(f^2 - 1)."""
        return cls(net, math.sqrt((1.0 + noise) ** 2 - 1.0), seed)

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=torch.float32)
        for i, sample in enumerate(x.detach().to("cpu", torch.float32)):
            digest = hashlib.blake2b(sample.numpy().tobytes(), digest_size=8, key=str(self.seed).encode())
            g = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
            out[i] = torch.randn(sample.shape, generator=g)
        return out.to(x.device, x.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.ratio == 0:
            return self.net(x, sigma, cond)
        s = expand_sigma(sigma, x)
        noisy_sigma = (s * (1 + self.ratio**2) ** 0.5).flatten()
        return self.net(x + self.ratio * s * self._noise(x), noisy_sigma, cond)


def _edm2_skip_path(block: Block, x: torch.Tensor) -> torch.Tensor:
    """An EDM2 block without its residual branch and attention: resample, 1x1 conv, (encoder) pixel norm."""
    x = resample(x, block.resample_mode)
    if block.conv_skip is not None:
        x = block.conv_skip(x)
    if block.flavor == "enc":
        x = pixel_norm(x, dim=1)
    return x.clamp(-CLIP_ACT, CLIP_ACT)


# diffusers' residual blocks, whose skip path is the identity (input + branch, the branch dropped). Inner
# layers of diffusers' blocks (attention, feed-forward, norms) sit inside a residual sum, where the identity
# is not a skip (it would count the input twice): those are refused rather than silently mis-skipped.
DIFFUSERS_BLOCKS = ("ResnetBlock2D", "Transformer2DModel", "BasicTransformerBlock", "JointTransformerBlock")


def _skip_rule(module: nn.Module) -> str | None:
    """How a module is skipped: "edm2" (its skip path), "identity", or None (it cannot be)."""
    if isinstance(module, Block):
        return "edm2"
    kind = type(module).__name__
    if not type(module).__module__.startswith("diffusers."):
        return "identity"  # a plain module: it must keep its input's shape (checked when it runs)
    if kind == "ResnetBlock2D":  # only one that neither resamples nor changes the channels
        same = module.in_channels == module.out_channels and not (module.up or module.down)
        return "identity" if same else None
    return "identity" if kind in DIFFUSERS_BLOCKS else None


def _skipped_output(module: nn.Module, name: str, args: tuple, kwargs: dict, output: Any) -> Any:
    """The output of `module` reduced to its skip path, in the form its caller expects."""
    if isinstance(module, Block):
        return _edm2_skip_path(module, args[0])
    hidden = args[0] if args else kwargs.get("hidden_states")
    if type(module).__name__ == "JointTransformerBlock":  # SD3: (text tokens, image tokens), both kept
        text = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
        return (text if output[0] is not None else None, hidden)  # the last block returns no text
    out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
    if not (torch.is_tensor(out) and torch.is_tensor(hidden)) or out.shape != hidden.shape:
        raise UserInputError(f"skip guide: module {name!r} changes its input's shape; cannot skip it")
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return type(output)(sample=hidden) if hasattr(output, "sample") else hidden


class SkipBlocksGuide(DerivedGuide):
    """The main network with the named blocks skipped while the guide evaluates it: EDM2 blocks reduced
    to their skip path, diffusers' residual blocks (`DIFFUSERS_BLOCKS`; SD3's joint blocks pass image and
    text tokens through) and other same-shape modules to the identity. Names are module names of `root`
    (default `net`; e.g. the diffusers network inside a wrapping denoiser), as `block_names` lists them."""

    def __init__(self, net: nn.Module, names: Sequence[str], root: nn.Module | None = None):
        super().__init__(net)
        root = net if root is None else root
        self.names = list(names)
        modules = named_modules(root, self.names, "skip guide", block_names(root))
        for n, m in modules.items():
            if _skip_rule(m) is None:
                hint = ", ".join(block_names(root)[:6])
                raise UserInputError(
                    f"skip guide: {n!r} is a {type(m).__name__}, not a skippable block; blocks include {hint}"
                )
        self._targets = list(modules.items())

    def _hook(self, name: str):
        def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            return _skipped_output(module, name, args, kwargs, output)

        return post

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        def register() -> list[Any]:
            return [m.register_forward_hook(self._hook(n), with_kwargs=True) for n, m in self._targets]

        with hooked(register):
            return self.net(x, sigma, cond)


def block_names(net: nn.Module) -> list[str]:
    """Block names that `SkipBlocksGuide` accepts, e.g. 'unet.dec.8x8_in0' (EDM2), 'mid_block.attentions.0'
    (a diffusers UNet), 'transformer_blocks.3' (SD3); other same-shape modules are accepted too."""
    return [n for n, m in net.named_modules() if n and (isinstance(m, Block) or _is_diffusers_block(m))]


def _is_diffusers_block(module: nn.Module) -> bool:
    return type(module).__module__.startswith("diffusers.") and _skip_rule(module) is not None


def quantize_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric uniform quantisation per output row to 2^(bits-1) - 1 levels each side."""
    levels = 2 ** (bits - 1) - 1
    flat = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    step = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
    return ((flat / step).round() * step).reshape(w.shape)


class QuantizedGuide(DerivedGuide):
    """A copy of the main network whose weight matrices (ndim >= 2) are quantised to `bits` bits.
    bits = 0 means no quantisation (the main network's own weights)."""

    def __init__(self, net: nn.Module, bits: int):
        if isinstance(bits, bool) or not isinstance(bits, int) or not (bits == 0 or 2 <= bits <= 16):
            raise UserInputError(f"quantisation bits must be 0 (off) or an integer in [2, 16], got {bits!r}")
        copy_ = copy.deepcopy(net) if bits else net
        super().__init__(copy_)
        self.bits = bits
        if bits:
            with torch.no_grad():
                for p in copy_.parameters():
                    if p.ndim >= 2:
                        p.copy_(quantize_weights(p, bits))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.net(x, sigma, cond)


def weak_guide(net: nn.Module, spec: str, seed: int = 0, root: nn.Module | None = None) -> nn.Module:
    """Parse KIND:VALUE (the CLI's --weak-guide) into a guide derived from `net`:

    dropout:P, input-noise:R, skip:NAME[+NAME...], quantize:BITS, precision:bf16|fp16|fp32,
    attention:TAU[:NAME+...] (self-attention at temperature 1 / TAU, `guides.attention`). Module names
    are those of `root` (default `net`: give the wrapped network when `net` is a wrapping denoiser).
    """
    from ..wrappers.precision import (  # precision wraps any denoiser; imported lazily
        LowPrecision,
        parse_dtype,
    )

    kind, sep, value = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in WEAK_GUIDE_KINDS:
        raise UserInputError(
            f"bad weak guide {spec!r}: expected KIND:VALUE with KIND one of {', '.join(WEAK_GUIDE_KINDS)}"
        )
    if kind == "attention":
        value, _, where = value.partition(":")
    if kind in ("dropout", "input-noise", "quantize", "attention"):
        try:
            number = int(value) if kind == "quantize" else float(value)
        except ValueError:
            raise UserInputError(f"bad weak guide {spec!r}: {value!r} is not a number") from None
        if kind == "dropout":
            return DropoutGuide(net, number, seed)
        if kind == "input-noise":
            return InputNoiseGuide(net, number, seed)
        if kind == "attention":
            return AttentionTemperatureGuide(net, number, split_names(where), root=root)
        return QuantizedGuide(net, number)
    if kind == "skip":
        return SkipBlocksGuide(net, split_names(value), root=root)
    return LowPrecision(net, parse_dtype(value))
