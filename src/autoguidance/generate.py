"""Generate images from trained EDM2 denoisers, optionally guided by a second network.

    seeds -> per-sample SeedStreams -> (noise, class) -> guided denoiser -> EDM Heun sampler -> uint8

Each sample draws everything random from its own generator seeded by its seed, in a fixed order: the
initial noise (C, H, W), then, for a class-conditional main network, its class label (drawn even when
`class_label` fixes the class, so that the generator state, and hence any churn noise, does not depend
on that option), then the churn noise step by step. An image therefore depends on its seed and the
settings only, never on the batch size or on how seeds are split across processes (`shard_seeds`).

The guided denoiser is autoguidance, D_w = D_guide + w (D_main - D_guide) (paper eq. 1), inside the
optional guidance interval. A guide with label_dim = 0 under a conditional main network is an
unconditional model, and the same formula is then classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import distributed as dist

from .denoiser import Denoiser, without_condition
from .errors import UserInputError, check_int
from .guidance import GuidedDenoiser, GuideTerm, autoguidance, check_interval, check_weight
from .images import to_uint8
from .io.networks import check_compatible
from .nets.precond import EDM2Denoiser
from .progress import Progress
from .sampling import Churn, edm_sigmas, sample
from .seeds import MAX_SEED, SeedStreams


def guided_denoiser(
    net: EDM2Denoiser,
    guide: EDM2Denoiser | None = None,
    guidance: float = 1.0,
    interval: tuple[float, float] | None = None,
    uncond: EDM2Denoiser | None = None,
    uncond_guidance: float = 1.0,
) -> Denoiser:
    """The denoiser to sample: `net` alone, or autoguidance(net, guide, guidance, interval).

    `uncond` adds a classifier-free term (w = uncond_guidance, the model called without labels) to the
    autoguidance term: D = D_net + (w - 1)(D_net - D_guide) + (w_u - 1)(D_net - D_uncond).

    The guide must work on the same images and classes as `net` (or be unconditional: CFG); a guidance
    weight other than 1 or an interval without a guide is an error rather than silently ignored.
    """
    w = check_weight(guidance)
    interval = check_interval(interval)
    if uncond is not None:
        return _with_uncond(net, guide, w, interval, uncond, check_weight(uncond_guidance))
    if guide is None:
        if w != 1.0:
            raise UserInputError(f"guidance weight {w:g} needs a guide network")
        if interval is not None:
            raise UserInputError("a guidance interval needs a guide network")
        return net
    check_compatible(net.config, guide.config)
    guide_fn: Denoiser = guide
    if guide.config.label_dim == 0 and net.config.label_dim > 0:
        guide_fn = without_condition(guide)  # an unconditional guide: classifier-free guidance
    return autoguidance(net, guide_fn, w, interval)


def _with_uncond(
    net: EDM2Denoiser,
    guide: EDM2Denoiser | None,
    w: float,
    interval: tuple[float, float] | None,
    uncond: EDM2Denoiser,
    w_u: float,
) -> Denoiser:
    """Autoguidance and CFG together (paper App. B.3): one term per guide, each with its own weight."""
    if net.config.label_dim == 0:
        raise UserInputError("an unconditional guide for CFG needs a class-conditional main network")
    check_compatible(net.config, uncond.config, "unconditional guide")
    if uncond.config.label_dim != 0:
        classes = uncond.config.label_dim
        raise UserInputError(f"the CFG guide must be unconditional (label_dim=0); it has {classes} classes")
    terms = [GuideTerm(without_condition(uncond), w_u)]
    if guide is not None:
        check_compatible(net.config, guide.config)
        terms.insert(0, GuideTerm(guide, w))
    elif w != 1.0:
        raise UserInputError(f"guidance weight {w:g} needs a guide network")
    return GuidedDenoiser(net, terms, interval)


def check_class_label(net: EDM2Denoiser, class_label: int | None) -> int | None:
    """Validate a fixed class for `net`: None, or an int in [0, label_dim) of a conditional net."""
    if class_label is None:
        return None
    label_dim = net.config.label_dim
    if label_dim == 0:
        raise UserInputError(f"class {class_label} given, but the network is unconditional (label_dim=0)")
    if isinstance(class_label, bool) or not isinstance(class_label, int) or not 0 <= class_label < label_dim:
        raise UserInputError(f"class must be an integer in [0, {label_dim - 1}], got {class_label!r}")
    return class_label


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    out = [int(s) for s in seeds]
    bad = [s for s in out if not 0 <= s <= MAX_SEED]
    if bad:
        raise UserInputError(f"seeds must lie in [0, 2^63), got {bad[:3]}")
    return out


@torch.no_grad()
def generate_images(
    net: EDM2Denoiser,
    seeds: Sequence[int],
    *,
    guide: EDM2Denoiser | None = None,
    guidance: float = 1.0,
    interval: tuple[float, float] | None = None,
    class_label: int | None = None,
    num_steps: int = 32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    solver: str = "heun",
    churn: Churn | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    uncond: EDM2Denoiser | None = None,
    uncond_guidance: float = 1.0,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample one image per seed with the EDM sampler (Heun: 2 num_steps - 1 evaluations per image,
    Euler: num_steps; `churn` adds EDM Algorithm 2's stochasticity, its noise from each seed's stream).

    net / guide: EDM2 denoisers; moved to `device` when given (default: net's device) and evaluated in
        eval mode (each network's mode is restored afterwards).
    guidance: w of D_w = D_guide + w (D_main - D_guide); interval: (sigma_lo, sigma_hi], guide evaluated
        only there. class_label: fix every sample's class (conditional nets); None draws it per seed.
    uncond / uncond_guidance: an extra CFG term (see `guided_denoiser`). decode: latents (B, C, h, w) ->
        uint8 images (B, H, W, 3) for latent networks (e.g. `interop.latents.LatentCodec.decode`).
    Returns images (N, H, W, C) uint8 on the CPU in the order of `seeds`, and labels (N,) int64 on the
    CPU, or None for an unconditional net.
    """
    seeds = _check_seeds(seeds)
    class_label = check_class_label(net, class_label)
    check_int("batch_size", batch_size, minimum=1)
    check_int("num_steps", num_steps, minimum=1)
    if not (0 < sigma_min <= sigma_max and math.isfinite(sigma_max)):
        raise UserInputError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    denoiser = guided_denoiser(net, guide, guidance, interval, uncond, uncond_guidance)
    cfg = net.config
    shape = (cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
    if device is not None:
        net.to(device)
        for m in (guide, uncond):
            if m is not None:
                m.to(device)
    device = next(net.parameters()).device
    sigmas = edm_sigmas(num_steps, sigma_min, sigma_max, rho)

    nets = [m for m in (net, guide, uncond) if m is not None]
    modes = [m.training for m in nets]
    images, labels = [], []
    try:
        for m in nets:
            m.eval()  # training mode would rewrite weights (forced normalisation) and apply dropout
        starts = range(0, len(seeds), batch_size)
        bar = Progress("generate", len(seeds), unit="img", enabled=progress)  # a bar, or log lines
        for start in starts:
            streams = SeedStreams(seeds[start : start + batch_size], device=device)  # noise made where used
            latents = streams.randn(shape)  # draw 1: initial noise
            cond = None
            if cfg.label_dim > 0:
                cond = streams.randint(cfg.label_dim)  # draw 2: the class, always drawn
                if class_label is not None:
                    cond = torch.full_like(cond, class_label)
            x = sample(denoiser, latents, sigmas, cond, solver=solver, churn=churn, streams=streams)
            images.append(decode(x).cpu() if decode is not None else to_uint8(x).cpu())
            if cond is not None:
                labels.append(cond.cpu())
            bar.update(len(streams))
        bar.close()
    finally:
        for m, mode in zip(nets, modes, strict=True):
            m.train(mode)
    h, w, c = shape[1], shape[2], shape[0]
    out = torch.cat(images) if images else torch.zeros((0, h, w, c), dtype=torch.uint8)
    if cfg.label_dim == 0:
        return out, None
    return out, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)


# --- several processes (torchrun) ------------------------------------------------------------------------


def shard_seeds(seeds: Sequence[int], rank: int, world_size: int, batch_size: int = 1) -> list[int]:
    """This rank's share of `seeds`: whole batches, dealt out in turn (strided by batch).

    The seed list is cut into consecutive batches of `batch_size` (the last one may be short); batch j
    goes to rank j % world_size. With batch_size = 1 this is plain striding, seeds[rank::world_size].
    Why batches: convolution and matmul kernels round differently for different batch sizes (about 1e-5
    in float32), so generating the rank's share with the same `batch_size` reproduces exactly the
    batches, hence bit for bit the images, of a single process. `gather_sharded` undoes the split.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seeds = list(seeds)
    starts = range(rank * batch_size, len(seeds), world_size * batch_size)
    return [s for start in starts for s in seeds[start : start + batch_size]]


def gather_sharded(local: torch.Tensor, total: int, batch_size: int = 1) -> torch.Tensor:
    """All-gather per-rank results of `shard_seeds` back into seed order, on every rank.

    local: (n_r, ...) this rank's rows for its share; total: the number of seeds before sharding;
    batch_size: as given to `shard_seeds`. Returns (total, ...). Uses tensor all_gather (no pickling):
    every rank pads to the largest share so that shapes agree. The process group must accept tensors on
    local's device (gloo: CPU). Without an initialised process group it returns `local`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    world = dist.get_world_size()
    # Which global rows each rank holds: the same split applied to the row indices.
    owned = [shard_seeds(range(total), r, world, batch_size) for r in range(world)]
    width = max(len(o) for o in owned)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = local.new_empty((total, *local.shape[1:]))
    for part, rows in zip(parts, owned, strict=True):
        out[rows] = part[: len(rows)]
    return out
