"""EDM preconditioning around the UNet, the learned uncertainty head, and the network's config.

`EDM2Denoiser` is a `Denoiser` (denoiser.py): D(x, sigma, cond) -> x0_hat, so it plugs straight into
guidance and sampling. `NetConfig` is plain data that rebuilds it; `build(config)` does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..denoiser import Signature, expand_sigma
from ..errors import UserInputError, check_int
from .mp import MPConv, MPFourier
from .unet import UNet


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild an `EDM2Denoiser` (stored as JSON in checkpoints).

    img_resolution: image side in pixels (8 for digits, 32 for padded MNIST); must be divisible by
        2^(len(channel_mult) - 1). label_dim: number of classes, 0 for an unconditional net.
    channel_mult: width of each level as a multiple of model_channels, from full resolution down.
    attn_resolutions: resolutions (pixels per side) whose blocks get self-attention; each must be one of
        the levels' resolutions. label_balance / concat_balance: the t of the label MP-sum and skip MP-cat.
    logvar_channels: Fourier features of the uncertainty head u(sigma).
    edm2_heads: attention heads by EDM2's rule, channels // 64 and none below 64 channels (networks
        converted from EDM2's files); by default at least one head (our small networks).
    """

    img_resolution: int
    img_channels: int
    label_dim: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float = 0.0
    label_balance: float = 0.5
    concat_balance: float = 0.5
    sigma_data: float = 0.5
    logvar_channels: int = 128
    edm2_heads: bool = False

    def __post_init__(self) -> None:
        # Accept lists (what JSON gives back) but store tuples, so configs compare and hash by value.
        object.__setattr__(self, "channel_mult", _int_tuple("channel_mult", self.channel_mult))
        object.__setattr__(self, "attn_resolutions", _int_tuple("attn_resolutions", self.attn_resolutions))
        for name in ("img_resolution", "img_channels", "model_channels", "num_blocks", "logvar_channels"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("label_dim", self.label_dim, minimum=0)
        if not self.channel_mult:
            raise UserInputError("channel_mult must list at least one level")
        levels = self.resolutions
        if self.img_resolution % (1 << (len(self.channel_mult) - 1)):
            raise UserInputError(
                f"img_resolution {self.img_resolution} cannot be halved {len(self.channel_mult) - 1} times "
                f"(one per extra level of channel_mult {self.channel_mult})"
            )
        bad = [r for r in self.attn_resolutions if r not in levels]
        if bad:
            raise UserInputError(f"attn_resolutions {bad} are not among the network's resolutions {levels}")
        _check_float("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        _check_float("label_balance", self.label_balance, 0.0, 1.0)
        _check_float("concat_balance", self.concat_balance, 0.0, 1.0)
        _check_float("sigma_data", self.sigma_data, 0.0, math.inf, lo_open=True, hi_open=True)

    @property
    def signature(self) -> Signature:
        """What the network denoises: (channels, side, side) samples with `label_dim` classes."""
        return Signature((self.img_channels, self.img_resolution, self.img_resolution), self.label_dim)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The side length at each level, e.g. (32, 16, 8)."""
        return tuple(self.img_resolution >> i for i in range(len(self.channel_mult)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists) that `from_dict` turns back into this config."""
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        if not self.edm2_heads:  # written only when set: our own networks' checkpoints stay as they were
            del d["edm2_heads"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        """Inverse of `to_dict`. Unknown or missing keys and bad values raise `UserInputError`."""
        if not isinstance(d, dict):
            raise UserInputError(f"network config must be a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise UserInputError(f"unknown network config keys {unknown}; valid keys: {sorted(fields)}")
        missing = sorted(n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in d)
        if missing:
            raise UserInputError(f"network config is missing keys {missing}")
        return cls(**d)


def _check_float(
    name: str, value: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise UserInputError(f"{name} must be a number in {interval}, got {value!r}")


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise UserInputError(f"{name} must be a list of integers, got {value!r}")
    for v in value:
        check_int(name, v, minimum=1)
    return tuple(value)


class EDM2Denoiser(nn.Module):
    """D(x; sigma, c) = c_skip x + c_out F(c_in x; c_noise, c) (EDM Table 1), plus u(sigma).

    `net` defaults to the UNet that `config` describes; passing another module with the same call
    signature (x, noise_labels, class_labels) -> F is for tests.
    """

    def __init__(self, config: NetConfig, net: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.sigma_data = config.sigma_data
        self.label_dim = config.label_dim
        self.unet = (
            net
            if net is not None
            else UNet(
                img_resolution=config.img_resolution,
                img_channels=config.img_channels,
                label_dim=config.label_dim,
                model_channels=config.model_channels,
                channel_mult=config.channel_mult,
                num_blocks=config.num_blocks,
                attn_resolutions=config.attn_resolutions,
                dropout=config.dropout,
                label_balance=config.label_balance,
                concat_balance=config.concat_balance,
                edm2_heads=config.edm2_heads,
            )
        )
        # Learned uncertainty u(sigma) (EDM2 Sec. 5 / eq. 8): weighs the loss per noise level.
        self.logvar_fourier = MPFourier(config.logvar_channels)
        self.logvar_linear = MPConv(config.logvar_channels, 1)

    @property
    def signature(self) -> Signature:
        return self.config.signature

    def one_hot(self, cond: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        """cond (B,) integer labels, or (B, label_dim) float label vectors, -> (B, label_dim) or None."""
        if self.label_dim == 0:
            if cond is not None:
                raise UserInputError("this network is unconditional (label_dim=0): pass cond=None")
            return None
        if cond is None:
            raise UserInputError(
                f"this network is class-conditional (label_dim={self.label_dim}): "
                "pass cond, a (B,) tensor of class labels"
            )
        if cond.is_floating_point():  # already label vectors (e.g. soft or all-zero labels)
            if cond.shape != (batch, self.label_dim):
                want, got = (batch, self.label_dim), tuple(cond.shape)
                raise UserInputError(f"label vectors must have shape {want}, got {got}")
            return cond.to(dtype)
        if cond.shape != (batch,):
            raise UserInputError(f"class labels must have shape ({batch},), got {tuple(cond.shape)}")
        in_range = (cond >= 0) & (cond < self.label_dim)
        if cond.device.type == "cpu":
            if not bool(in_range.all()):
                raise UserInputError(f"class labels must lie in [0, {self.label_dim}), got {cond.tolist()}")
        else:  # reading the check back would stall the host on every evaluation: let the device assert
            torch._assert_async(in_range.all(), "class labels out of range")
        # A comparison rather than F.one_hot, whose range check reads the labels back to the host.
        classes = torch.arange(self.label_dim, device=cond.device)
        return (cond.long()[:, None] == classes).to(dtype)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        cond: torch.Tensor | None = None,
        return_logvar: bool = False,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) noisy images, sigma (B,) or a scalar (> 0), cond as in `one_hot`.

        dtype: run the UNet in this precision (fp16, bf16) while the preconditioning stays in x's, as
        EDM2 runs its networks; default x's dtype. Returns D (B, C, H, W); with `return_logvar` also
        u(sigma) shaped (B, 1, 1, 1) to broadcast against the per-element loss lambda / e^u ||D - y||^2 + u.
        """
        s = expand_sigma(sigma, x)  # (B, 1, 1, 1)
        sd = self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = s.flatten().log() / 4
        body = dtype or x.dtype
        labels = self.one_hot(cond, x.shape[0], body)
        f = self.unet((c_in * x).to(body), c_noise, labels)
        d = c_skip * x + c_out * f.to(x.dtype)
        if not return_logvar:
            return d
        logvar = self.logvar_linear(self.logvar_fourier(c_noise)).reshape(s.shape)
        return d, logvar


def build(config: NetConfig) -> EDM2Denoiser:
    """A freshly initialised denoiser for `config` (random weights from torch's global generator)."""
    if not isinstance(config, NetConfig):
        raise UserInputError(f"build() needs a NetConfig, got {type(config).__name__}")
    return EDM2Denoiser(config)
