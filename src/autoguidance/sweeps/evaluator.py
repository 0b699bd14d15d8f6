"""One configuration -> images from its seeds -> metrics: the evaluation behind sweeps, tuning and the
experiments.

Every configuration draws its samples from the seeds seed0, seed0 + 1, ... through the one generation
loop (`generate.generate_batches`: initial noise, then the class), so that all configurations of a sweep
share their noise and classes (common random numbers) and an image equals the one `autoguidance generate`
makes for that seed. Under torchrun the seeds are sharded over the processes by whole batches and
gathered back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..denoiser import Denoiser
from ..distributed import gather_sharded, shard_seeds
from ..errors import UserInputError
from ..generate import generate_images
from ..guidance import check_guide, guided, interpolation_weights
from ..guides import DropoutGuide, InputNoiseGuide
from ..sampling import SamplerSettings
from .configs import USES
from .models import ModelCache
from .plan import thumbnails
from .store import canonical_key

DEGRADATION_SEED = 0  # the dropout masks of the Section 4 degradations

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
    if "guide" in cfgs:
        check_guide(main, cfgs["guide"])
        if cfgs["guide"].label_dim != main.label_dim:  # an unconditional guide makes a cfg configuration
            raise UserInputError(
                "the autoguidance guide must have the main model's conditioning "
                f"({main.label_dim} classes, guide {cfgs['guide'].label_dim}); "
                "an unconditional guide is kind cfg"
            )
    if "uncond" in cfgs:
        check_guide(main, cfgs["uncond"], role="uncond")


def _degraded(net: Denoiser, config: dict[str, Any], role: str) -> Denoiser:
    """The Section 4 degradations of a role's network (guides/weak.py: dropout where EDM2 trains with it,
    input noise raised by a factor), each 0 when absent."""
    dropout, noise = config.get(f"{role}_dropout", 0.0), config.get(f"{role}_noise", 0.0)
    if dropout > 0:
        net = DropoutGuide(net, dropout, seed=DEGRADATION_SEED)
    if noise > 0:
        net = InputNoiseGuide.raised_by(net, noise, seed=DEGRADATION_SEED)
    return net


def build_denoiser(config: dict[str, Any], models: ModelCache) -> tuple[Denoiser, Any, dict[str, Any]]:
    """The guided denoiser of `config` (`guidance.guided`), its main network and the files used."""
    nets, files = {}, {}
    for role in USES[config["kind"]]:
        net, meta = models.load(config[f"{role}_run"], config.get(f"{role}_ema"), config.get(f"{role}_at"))
        nets[role] = net
        files[role] = {"file": meta["file"], "training_images": meta.get("training_images")}
    _check_roles({role: net.config for role, net in nets.items()})
    kind, w, interval = config["kind"], config.get("w", 1.0), config.get("interval")
    main = _degraded(nets["main"], config, "main")
    if kind == "none":
        return main, nets["main"], files
    if kind == "autoguidance":
        denoiser = guided(main, _degraded(nets["guide"], config, "guide"), w, interval=interval)
    elif kind == "cfg":
        denoiser = guided(main, uncond=nets["uncond"], w_uncond=w, interval=interval)
    else:
        w_guide, w_uncond = interpolation_weights(w, config["alpha"])
        guide = _degraded(nets["guide"], config, "guide")
        denoiser = guided(main, guide, w_guide, uncond=nets["uncond"], w_uncond=w_uncond, interval=interval)
    return denoiser, nets["main"], files


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
    rank, world = _rank_world()
    mine = shard_seeds(seeds, rank, world, batch_size)
    sampler = SamplerSettings(steps=config["steps"])  # EDM's schedule, as `autoguidance generate` uses it
    images, labels = generate_images(
        denoiser, mine, sampler=sampler, batch_size=batch_size, device=models.device, progress=progress
    )
    images = gather_sharded(images, len(seeds), batch_size)
    if labels is not None:
        labels = gather_sharded(labels, len(seeds), batch_size)
    return images, labels, files


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
