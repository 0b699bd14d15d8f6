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
  skip_blocks   named blocks reduced to their skip path (EDM2 blocks) or to the identity (other modules).
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

import contextlib
import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..denoiser import Signature, expand_sigma, signature
from ..errors import UserInputError
from ..nets.mp import pixel_norm
from ..nets.unet import CLIP_ACT, Block, resample

WEAK_GUIDE_KINDS = ("dropout", "input-noise", "skip", "quantize", "precision")


class _DerivedGuide(nn.Module):
    """Base: holds the main network (shared, not copied) and mirrors its config."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def config(self):  # the guide denoises the same images with the same conditioning
        return self.net.config

    @property
    def signature(self) -> Signature:
        return signature(self.net)


@contextlib.contextmanager
def _hooked(register: Callable[[], list[Any]]) -> Iterator[None]:
    """Hooks on the shared network's modules for the duration of one guide evaluation only: the main
    model, which shares the modules, never sees them, and nothing stays attached afterwards."""
    handles = register()
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class DropoutGuide(_DerivedGuide):
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
        with _hooked(lambda: [m.register_forward_pre_hook(self._hook(n)) for n, m in self._targets]):
            return self.net(x, sigma, cond)


class InputNoiseGuide(_DerivedGuide):
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


class SkipBlocksGuide(_DerivedGuide):
    """The main network with the named blocks skipped (see `block_names` for the names)."""

    def __init__(self, net: nn.Module, names: Sequence[str]):
        super().__init__(net)
        modules = dict(net.named_modules())
        unknown = [n for n in names if n not in modules or n == ""]
        if unknown:
            hint = ", ".join(block_names(net)[:8])
            raise UserInputError(f"skip guide: no module named {unknown[0]!r}; blocks include {hint}")
        self.names = list(names)
        self._targets = [(n, modules[n]) for n in self.names]

    def _hook(self, name: str):
        def post(module: nn.Module, args: tuple, output):
            if isinstance(module, Block):
                return _edm2_skip_path(module, args[0])
            out = output[0] if isinstance(output, tuple) else output
            if not isinstance(out, torch.Tensor) or out.shape != args[0].shape:
                raise UserInputError(f"skip guide: module {name!r} changes its input's shape; cannot skip it")
            return (args[0], *output[1:]) if isinstance(output, tuple) else args[0]

        return post

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        with _hooked(lambda: [m.register_forward_hook(self._hook(n)) for n, m in self._targets]):
            return self.net(x, sigma, cond)


def block_names(net: nn.Module) -> list[str]:
    """Names that `SkipBlocksGuide` accepts for an EDM2 network (e.g. 'unet.dec.8x8_in0')."""
    return [n for n, m in net.named_modules() if isinstance(m, Block)]


def quantize_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric uniform quantisation per output row to 2^(bits-1) - 1 levels each side."""
    levels = 2 ** (bits - 1) - 1
    flat = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    step = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
    return ((flat / step).round() * step).reshape(w.shape)


class QuantizedGuide(_DerivedGuide):
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


def weak_guide(net: nn.Module, spec: str, seed: int = 0) -> nn.Module:
    """Parse KIND:VALUE (the CLI's --weak-guide) into a guide derived from `net`:

    dropout:P, input-noise:R, skip:NAME[+NAME...], quantize:BITS, precision:bf16|fp16|fp32.
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
    if kind in ("dropout", "input-noise", "quantize"):
        try:
            number = int(value) if kind == "quantize" else float(value)
        except ValueError:
            raise UserInputError(f"bad weak guide {spec!r}: {value!r} is not a number") from None
        if kind == "dropout":
            return DropoutGuide(net, number, seed)
        if kind == "input-noise":
            return InputNoiseGuide(net, number, seed)
        return QuantizedGuide(net, number)
    if kind == "skip":
        return SkipBlocksGuide(net, [n.strip() for n in value.split("+") if n.strip()])
    return LowPrecision(net, parse_dtype(value))
