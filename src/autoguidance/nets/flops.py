"""Model size: parameter counts and FLOPs of one denoiser evaluation (for `autoguidance info`).

FLOPs are counted as 2 x multiply-adds of every MPConv (convolutions and linears) and of the two
attention matmuls (q k^T and attn v), measured by hooks during one forward pass of a single sample.
Element-wise ops (activations, norms, MP-sums) are left out, as is usual; they are a few percent.
"""

from __future__ import annotations

import torch
from torch import nn

from .mp import MPConv
from .precond import EDM2Denoiser
from .unet import CosineAttention


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (buffers such as Fourier frequencies excluded)."""
    return sum(p.numel() for p in module.parameters())


def flops_per_evaluation(net: EDM2Denoiser) -> int:
    """FLOPs (2 x MACs) of one evaluation D(x; sigma, c) for one sample of shape (C, R, R).

    The uncertainty head u(sigma) is excluded: it is evaluated only in training. The network's
    train/eval mode is restored afterwards and its weights are left untouched.
    """
    macs = 0

    def conv_hook(module: MPConv, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        # Each output element is a dot product over the weight's fan-in (in_channels x kernel).
        macs += output.numel() * module.weight[0].numel()

    def attn_hook(module: CosineAttention, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        b, c, h, w = inputs[0].shape
        # q k^T and attn v: each heads x (HW)^2 x (C / heads) MACs = C (HW)^2 per sample.
        macs += 2 * b * c * (h * w) ** 2

    modules = [m for n, m in net.named_modules() if not n.startswith("logvar")]
    handles = [m.register_forward_hook(conv_hook) for m in modules if isinstance(m, MPConv)]
    handles += [m.register_forward_hook(attn_hook) for m in modules if isinstance(m, CosineAttention)]
    was_training = net.training
    try:
        net.eval()  # eval: MPConv must not rewrite its stored weights during this probe
        param = next(net.parameters())
        config = net.config
        res, dev = config.img_resolution, param.device
        x = torch.zeros(1, config.img_channels, res, res, dtype=param.dtype, device=dev)
        cond = torch.zeros(1, dtype=torch.long, device=dev) if config.label_dim > 0 else None
        with torch.no_grad():
            net(x, torch.ones(1, dtype=param.dtype, device=dev), cond)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return 2 * macs
