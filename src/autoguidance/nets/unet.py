"""The EDM2 UNet, "config G" (EDM2, Karras et al. 2024, Sec. 3, App. B.7 and Fig. 21).

Built bottom-up from the magnitude-preserving primitives in `mp.py`: every activation keeps RMS about 1,
so there are no normalisation layers besides the encoder's pixel norm, no biases, and the only
learned gains are the per-block embedding gains and the output gain, both initialised at 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .mp import MPConv, MPFourier, mp_cat, mp_silu, mp_sum, pixel_norm

RES_BALANCE = 0.3  # residual branch share in MP-sum (EDM2 App. B.7)
ATTN_BALANCE = 0.3  # attention branch share in MP-sum
CLIP_ACT = 256.0  # activations clipped to +-256 after each block (guards against rare fp blow-ups)
CHANNELS_PER_HEAD = 64


def resample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, C, H, W) -> 2x smaller ('down': 2x2 box filter) or 2x larger ('up': nearest), or unchanged.

    Both are the [1, 1] filter of EDM2: box averaging and nearest repetition keep unit magnitude for
    spatially correlated features, which is why no gain is attached.
    """
    if mode == "down":
        return F.avg_pool2d(x, 2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class CosineAttention(nn.Module):
    """Multi-head self-attention over pixels with pixel-normalised q, k, v (cosine attention, EDM2 B.7).

    (B, C, H, W) -> (B, C, H, W). Normalising q and k bounds the logits to [-sqrt(d), sqrt(d)], so the
    softmax cannot saturate as weights grow; normalising v keeps the output at unit magnitude.
    """

    def __init__(self, channels: int, num_heads: int | None = None):
        super().__init__()
        # By default at least one head: our small nets have fewer than 64 channels at attention levels.
        heads = num_heads or max(1, channels // CHANNELS_PER_HEAD)
        while channels % heads:
            heads -= 1
        self.num_heads = heads
        self.qkv = MPConv(channels, 3 * channels, kernel=(1, 1))
        self.proj = MPConv(channels, channels, kernel=(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        qkv = pixel_norm(qkv, dim=3)
        # (B, heads, d, HW) -> (B, heads, HW, d) for SDPA, whose default scale is 1 / sqrt(d).
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """One UNet block, encoder or decoder flavour (EDM2 Fig. 21, config G).

    (B, in_channels, H, W), emb (B, emb_channels) -> (B, out_channels, H', W') with H' = H/2, H or 2H by
    `resample_mode`. Encoder: resample, 1x1 conv if the width changes, pixel norm, then the residual
    branch. Decoder: resample, residual branch, and the 1x1 conv on the skip path after the branch (the
    decoder input is an MP-cat of features and an encoder skip, so it is not pixel-normalised).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        flavor: str,
        resample_mode: str = "keep",
        attention: bool = False,
        dropout: float = 0.0,
        edm2_heads: bool = False,
    ):
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"flavor must be 'enc' or 'dec', got {flavor!r}")
        self.flavor = flavor
        self.out_channels = out_channels
        self.resample_mode = resample_mode
        self.dropout = dropout
        # Encoder: the branch sees out_channels (the 1x1 conv runs first); decoder: it sees in_channels.
        branch_in = out_channels if flavor == "enc" else in_channels
        self.emb_gain = nn.Parameter(torch.zeros([]))  # 0 at init: blocks start unmodulated by sigma/class
        self.conv_res0 = MPConv(branch_in, out_channels, kernel=(3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels)
        self.conv_res1 = MPConv(out_channels, out_channels, kernel=(3, 3))
        # 1x1 conv only where the width changes; elsewhere the skip path is the identity.
        self.conv_skip = None
        if in_channels != out_channels:
            self.conv_skip = MPConv(in_channels, out_channels, kernel=(1, 1))
        # EDM2's own rule (its released networks): channels // 64 heads, so no attention below 64 channels.
        heads = out_channels // CHANNELS_PER_HEAD if edm2_heads else None
        self.attn = CosineAttention(out_channels, heads) if attention and heads != 0 else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = pixel_norm(x, dim=1)  # the encoder's only normalisation: unit RMS per pixel
        y = self.conv_res0(mp_silu(x))
        # Modulation c = 1 + g * linear(emb), g a learned scalar initialised at 0 (EDM2 B.7).
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=RES_BALANCE)
        if self.attn is not None:
            x = mp_sum(x, self.attn(x), t=ATTN_BALANCE)
        return x.clamp(-CLIP_ACT, CLIP_ACT)


class UNet(nn.Module):
    """The raw network F(x_in; c_noise, class) of EDM2 config G (no preconditioning; see precond.py).

    Levels l = 0..L-1 run at resolution img_resolution / 2^l with model_channels * channel_mult[l]
    channels. Encoder: an input 3x3 conv at level 0, a downsampling block at each deeper level, then
    `num_blocks` blocks per level. Decoder: two blocks at the lowest level (the first with attention),
    an upsampling block at each shallower level, then `num_blocks + 1` blocks per level, each fed the
    MP-cat of the running features and one encoder output (skip).
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        model_channels: int,
        channel_mult: Sequence[int],
        num_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float = 0.0,
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        edm2_heads: bool = False,
    ):
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        noise_channels = widths[0]
        emb_channels = max(widths)
        self.label_dim = label_dim
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        self.out_gain = nn.Parameter(torch.zeros([]))  # F = 0 at init, so D = c_skip x (EDM2 B.7)

        # Embedding: MP-Fourier(c_noise) -> linear, + class one-hot -> linear, MP-sum, MP-SiLU.
        self.emb_fourier = MPFourier(noise_channels)
        self.emb_noise = MPConv(noise_channels, emb_channels)
        self.emb_label = MPConv(label_dim, emb_channels) if label_dim > 0 else None

        block = dict(emb_channels=emb_channels, dropout=dropout, edm2_heads=edm2_heads)
        self.enc = nn.ModuleDict()
        cout = img_channels + 1  # + a constant-ones channel: stands in for biases and, padded, marks borders
        for level, width in enumerate(widths):
            res = img_resolution >> level
            attn = res in attn_resolutions
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(cout, width, kernel=(3, 3))
                cout = width
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, flavor="enc", resample_mode="down", **block)
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = Block(cout, width, flavor="enc", attention=attn, **block)
                cout = width

        skips = [m.out_channels for m in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, width in reversed(list(enumerate(widths))):
            res = img_resolution >> level
            attn = res in attn_resolutions
            if level == len(widths) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, flavor="dec", attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, flavor="dec", **block)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, flavor="dec", resample_mode="up", **block)
            for i in range(num_blocks + 1):
                cin = cout + skips.pop()
                self.dec[f"{res}x{res}_block{i}"] = Block(cin, width, flavor="dec", attention=attn, **block)
                cout = width
        self.out_conv = MPConv(cout, img_channels, kernel=(3, 3))

    def forward(
        self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, C, H, W) at unit variance, noise_labels (B,) = c_noise, class_labels (B, label_dim)
        one-hot vectors (or None when label_dim = 0). Returns F of shape (B, C, H, W)."""
        emb = self.emb_noise(self.emb_fourier(noise_labels)).to(x.dtype)
        if self.emb_label is not None:
            if class_labels is None:
                raise ValueError(f"conditional UNet (label_dim={self.label_dim}) needs class_labels")
            # One-hot scaled by sqrt(num_classes) has unit RMS, like every other MP input.
            label = self.emb_label(class_labels.to(x.dtype) * math.sqrt(class_labels.shape[1]))
            emb = mp_sum(emb, label, t=self.label_balance)
        emb = mp_silu(emb)

        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, module in self.enc.items():
            x = module(x) if name.endswith("_conv") else module(x, emb)
            skips.append(x)
        for name, module in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = module(x, emb)
        return self.out_conv(x, gain=self.out_gain)
