"""Training a toy model by exact score matching (paper App. C.1).

Each step draws clean y from the exact mixture, ln sigma ~ N(P_mean, P_std^2), x = y + sigma n, and
minimises sigma^2 ||score_theta(x; sigma) - score_true(x; sigma)||^2, the true score known in closed form.
Adam (0.9, 0.99) at lr_ref / sqrt(max(t / t_ref, 1)) (EDM2 eq. 121) and a power-function EMA whose
averaged weights are the ones kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..training.ema import PowerFunctionEMA
from .mixture import ToyMixture
from .model import ToyModel, ToyModelConfig


@dataclass(frozen=True)
class ToyTrainConfig:
    classes: tuple[int, ...] = (0,)
    width: int = 64
    iterations: int = 4096
    batch_size: int = 4096
    lr_ref: float = 1e-2
    t_ref: float = 512
    p_mean: float = -2.3
    p_std: float = 1.5
    ema_sigma_rel: float = 0.010
    seed: int = 0
    warmup: int = 0  # linear learning-rate warm-up over this many iterations (0: none, the paper's)
    gain_init: float = 0.0  # initial output gain (0: the paper's, the untrained model is the prior)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d


def learning_rate(cfg: ToyTrainConfig, step: int) -> float:
    """alpha_ref / sqrt(max(t / t_ref, 1)), t counted in iterations (EDM2 eq. 121), times a linear
    warm-up min(t / warmup, 1) when `warmup` > 0."""
    t = step + 1
    return cfg.lr_ref / max(t / cfg.t_ref, 1.0) ** 0.5 * (min(t / cfg.warmup, 1.0) if cfg.warmup else 1.0)


def heldout_loss(
    model: ToyModel, mixture: ToyMixture, cfg: ToyTrainConfig, num_samples: int = 2**16, seed: int = 12345
) -> float:
    """The training loss sigma^2 ||score_theta - score_true||^2 on a fixed held-out draw (same sigma
    distribution as training), exact targets: comparable across seeds, recipes and model sizes."""
    gen = torch.Generator().manual_seed(seed)
    y = mixture.sample(num_samples, 0.0, generator=gen)
    sigma = (cfg.p_mean + cfg.p_std * torch.randn(num_samples, generator=gen)).exp()
    x = y + sigma[:, None] * torch.randn(num_samples, 2, generator=gen)
    _, target = mixture.log_prob_and_score(x, sigma)
    p = next(model.parameters())
    total = 0.0
    for i in range(0, num_samples, 8192):
        pred = model.score(x[i : i + 8192].to(p), sigma[i : i + 8192].to(p)).cpu()
        err = sigma[i : i + 8192, None] ** 2 * (pred - target[i : i + 8192]).square()
        total += float(err.sum(dim=1).double().sum())
    return total / num_samples


def train_toy_model(
    cfg: ToyTrainConfig,
    mixture: ToyMixture | None = None,
    progress: bool = False,
    log: Callable[[int, float], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[ToyModel, list[float]]:
    """Train one model; returns the EMA model (eval mode) and the per-iteration losses.

    Data and exact targets are drawn on the CPU (the fused kernel), the network runs on `device`.
    """
    mixture = mixture or ToyMixture(cfg.classes)
    torch.manual_seed(cfg.seed)  # the MLP's initial weights
    net = ToyModel(ToyModelConfig(width=cfg.width))
    with torch.no_grad():
        net.gain.fill_(cfg.gain_init)
    net = net.to(device)
    net.train()
    ema = PowerFunctionEMA(net, sigma_rels=(cfg.ema_sigma_rel,))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr_ref, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    desc = f"train width {cfg.width} classes {''.join('AB'[c] for c in cfg.classes)}"
    for step in tqdm(range(cfg.iterations), disable=None if progress else True, desc=desc, leave=False):
        y = mixture.sample(cfg.batch_size, 0.0, generator=gen)
        sigma = (cfg.p_mean + cfg.p_std * torch.randn(cfg.batch_size, generator=gen)).exp()
        x = y + sigma[:, None] * torch.randn(cfg.batch_size, 2, generator=gen)
        _, target = mixture.log_prob_and_score(x, sigma)
        pred = net.score(x.to(device), sigma.to(device), create_graph=True)
        target, sigma = target.to(device), sigma.to(device)
        loss = (sigma[:, None] ** 2 * (pred - target).square()).sum(dim=1).mean()
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net, cur_t=step + 1, delta_t=1)
        losses.append(loss.item())
        if log is not None:
            log(step, losses[-1])
    ema.copy_to(net, 0)
    net.eval()
    return net, losses
