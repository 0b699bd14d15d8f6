"""One configuration -> images from its seeds -> metrics: the evaluation behind sweeps, tuning and the
experiments.

Every configuration draws its samples from the seeds seed0, seed0 + 1, ... in the order of
`generation.generate_images` (initial noise, then the class), so that all configurations of a sweep share
their noise and classes (common random numbers) and an image equals the one `autoguidance generate` makes
for that seed. Under torchrun the seeds are sharded over the processes by whole batches and gathered back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from ..errors import UserInputError
from ..experiments.degrade import with_frozen_dropout, with_input_noise
from ..generate import gather_sharded, shard_seeds
from ..guidance import autoguidance, classifier_free, interpolated
from ..images import to_uint8
from ..io.networks import check_compatible
from ..sampling import edm_sigmas, sample
from ..seeds import SeedStreams
from .configs import USES
from .models import ModelCache
from .plan import thumbnails
from .store import canonical_key

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # the EDM schedule, as `autoguidance generate` uses it

Measure = Callable[[torch.Tensor, torch.Tensor | None], dict[str, float]]
"""(uint8 images (N, H, W, C), intended classes (N,) or None) -> {metric name: number}."""


def check_config(config: dict[str, Any], models: ModelCache) -> None:
    """Check a configuration's networks against each other from their headers (before any work)."""
    cfgs = {
        role: models.net_config(config[f"{role}_run"], config.get(f"{role}_ema"), config.get(f"{role}_at"))
        for role in USES[config["kind"]]
    }
    _check_roles(cfgs)


def _check_roles(cfgs: dict[str, Any]) -> None:
    main = cfgs["main"]
    for role in ("guide", "uncond"):
        if role in cfgs:
            check_compatible(main, cfgs[role], guide_name=f"the {role} network")
    if "guide" in cfgs and cfgs["guide"].label_dim != main.label_dim:
        raise UserInputError(
            "the autoguidance guide must have the main model's conditioning "
            f"({main.label_dim} classes, guide {cfgs['guide'].label_dim}); an unconditional guide is kind cfg"
        )
    if "uncond" in cfgs and cfgs["uncond"].label_dim != 0:
        raise UserInputError("the cfg guide (uncond_run) must be an unconditional network (label_dim 0)")


def build_denoiser(config: dict[str, Any], models: ModelCache) -> tuple[Denoiser, Any, dict[str, Any]]:
    """The guided denoiser of `config`, its main network (for shapes and classes) and the files used."""
    nets, files = {}, {}
    for role in USES[config["kind"]]:
        net, meta = models.load(config[f"{role}_run"], config.get(f"{role}_ema"), config.get(f"{role}_at"))
        nets[role] = net
        files[role] = {"file": meta["file"], "training_images": meta.get("training_images")}
    main = nets["main"]
    _check_roles({role: net.config for role, net in nets.items()})

    def degraded(role: str) -> Denoiser:
        net = with_frozen_dropout(nets[role], config.get(f"{role}_dropout", 0.0))
        return with_input_noise(net, config.get(f"{role}_noise", 0.0))

    kind, interval = config["kind"], config.get("interval")
    d_main = degraded("main")
    if kind == "none":
        denoiser = d_main
    elif kind == "autoguidance":
        denoiser = autoguidance(d_main, degraded("guide"), config["w"], interval)
    elif kind == "cfg":
        denoiser = classifier_free(d_main, nets["uncond"], config["w"], interval)
    else:
        denoiser = interpolated(
            d_main, nets["uncond"], degraded("guide"), config["w"], config["alpha"], interval
        )
    return denoiser, main, files


@torch.no_grad()
def generate(
    config: dict[str, Any],
    models: ModelCache,
    seeds: list[int],
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """uint8 images (N, H, W, C) and classes (N,) (None: unconditional) for `seeds`, in seed order,
    sharded over torchrun's processes (every process returns all of them)."""
    denoiser, main, files = build_denoiser(config, models)
    cfg = main.config
    shape = (cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
    sigmas = edm_sigmas(config["steps"], SIGMA_MIN, SIGMA_MAX, RHO)
    rank, world = _rank_world()
    mine = shard_seeds(seeds, rank, world, batch_size)
    images, labels = [], []
    starts = range(0, len(mine), batch_size)
    for start in tqdm(starts, disable=not progress, desc="generating", unit="batch", leave=False):
        streams = SeedStreams(mine[start : start + batch_size])
        latents = streams.randn(shape, device=models.device)  # draw 1: the initial noise
        cond = streams.randint(cfg.label_dim, device=models.device) if cfg.label_dim > 0 else None  # draw 2
        x = sample(denoiser, latents, sigmas, cond, solver="heun")
        images.append(to_uint8(x).cpu())
        if cond is not None:
            labels.append(cond.cpu())
    h, w, c = shape[1], shape[2], shape[0]
    out = torch.cat(images) if images else torch.zeros((0, h, w, c), dtype=torch.uint8)
    out = gather_sharded(out, len(seeds), batch_size)
    lab = None
    if cfg.label_dim > 0:
        lab = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        lab = gather_sharded(lab, len(seeds), batch_size)
    return out, lab, files


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ImageEvaluator:
    """config -> {"metrics", "info"} for `run_sweep`; `at(config, n)` for `run_tune`.

    Images of the configuration last evaluated are kept, so that measuring it again on more seeds (the
    tuning rungs: a prefix of one seed list) generates only the new seeds.
    """

    def __init__(self, models: ModelCache, measure: Measure, batch_size: int = 64, progress: bool = False):
        self.models, self.measure = models, measure
        self.batch_size, self.progress = batch_size, progress
        self._memo: tuple[str, torch.Tensor, torch.Tensor | None, dict] | None = None

    def images(self, config: dict[str, Any], n: int) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        key = canonical_key({k: v for k, v in config.items() if k != "samples"})
        have = 0
        if self._memo is not None and self._memo[0] == key:
            have = len(self._memo[1])
        if have < n:
            seeds = list(range(config["seed0"] + have, config["seed0"] + n))
            imgs, labs, files = generate(config, self.models, seeds, self.batch_size, self.progress)
            if have:
                _, old_i, old_l, _ = self._memo
                imgs = torch.cat([old_i, imgs])
                labs = None if labs is None else torch.cat([old_l, labs])
            self._memo = (key, imgs, labs, files)
        _, imgs, labs, files = self._memo
        return imgs[:n], (None if labs is None else labs[:n]), files

    def at(self, config: dict[str, Any], n: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        images, labels, files = self.images(config, n)
        t1 = time.perf_counter()
        metrics = self.measure(images, labels)
        t2 = time.perf_counter()
        info = {
            "models": files,
            "samples": n,
            "generate_s": t1 - t0,
            "measure_s": t2 - t1,
            "thumbnails": thumbnails(images),
        }
        return {"metrics": metrics, "info": info}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.at(config, config["samples"])
