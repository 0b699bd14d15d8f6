"""Half and bfloat16 inference, as EDM2 runs its networks on GPUs.

EDM2's preconditioning stays in float32 (c_skip, c_out, c_in, c_noise and the final sum) and only the
UNet runs in reduced precision; MPConv casts its float32-normalised weights to the activation dtype, so
the stored weights stay float32. `LowPrecision` does the same around our `EDM2Denoiser`, and falls back
to torch.autocast for other denoisers (diffusers models cast themselves, see wrappers/diffusers.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..denoiser import Signature, signature
from ..errors import UserInputError
from ..nets.precond import EDM2Denoiser

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}


def parse_dtype(text: str) -> torch.dtype:
    key = _ALIASES.get(text.strip().lower(), text.strip().lower())
    if key not in DTYPES:
        raise UserInputError(f"unknown dtype {text!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[key]


class LowPrecision(nn.Module):
    """D(x, sigma, cond) with the network body in `dtype`; input and output keep the caller's dtype."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self.dtype = dtype

    @property
    def config(self):
        return self.net.config

    @property
    def signature(self) -> Signature:
        return signature(self.net)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.dtype == x.dtype:
            return self.net(x, sigma, cond)
        if isinstance(self.net, EDM2Denoiser):
            # EDM preconditioning in float32 (EDM Table 1), the UNet in self.dtype (as EDM2's Precond).
            return self.net(x.to(torch.float32), sigma, cond, dtype=self.dtype).to(x.dtype)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.net(x, sigma, cond)
        return out.to(x.dtype)
