"""The research that chose the toy's default recipe: a paper-length main model (4096 x 4096, lr 2e-2), its
own 512-iteration state as the autoguidance guide, and w = 2.5. The scripts in this folder (screen,
confirm, front, figure, knots, repro, snapshot_check, summarize, tables, queue_stage*.sh) run from the
repository root as `python benchmarks/toy_recipe/X.py`; their results and the findings are in
benchmarks/results/toy_recipe/ (REPORT.md).

Shared helpers of the toy-recipe research: models keyed by their full training config (trained once
into out/research/models/<tag>/, reused by every later script), and one evaluator that samples a guided
denoiser on the same seeded initial noise as `run_toy` and scores it with the package's exact metrics.

Everything runs single-threaded (the machine is shared): import this module before torch is used.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import json  # noqa: E402
import time  # noqa: E402
from dataclasses import fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from autoguidance.io import atomic  # noqa: E402
from autoguidance.sampling import edm_sigmas, sample  # noqa: E402
from autoguidance.seeds import SeedStreams  # noqa: E402
from autoguidance.toy.experiment import (  # noqa: E402
    DEFAULT_RECIPE,
    ToySettings,
    guided_denoisers,
    initial_latents,
    obtain_model,
)
from autoguidance.toy.metrics import (  # noqa: E402
    RecallReference,
    ToyMetrics,
    outlier_threshold,
    toy_metrics,
)
from autoguidance.toy.mixture import ToyMixture  # noqa: E402
from autoguidance.toy.train import ToyTrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # the repository root
OUT = ROOT / "out" / "research"  # model and run caches (not committed)
RESULTS = ROOT / "benchmarks" / "results" / "toy_recipe"
SETTINGS = ToySettings()  # sampler, tau and recall reference exactly as `run_toy` uses them
# Every scalar metric of `toy_metrics`, and with them the per-depth masses.
METRICS = tuple(f.name for f in fields(ToyMetrics) if f.name not in ("num_samples", "depth_mass"))
KEYS = (*METRICS, "depth_mass")


def tag(cfg: ToyTrainConfig) -> str:
    """A folder name that spells out every field that differs from ToyTrainConfig's defaults' meaning."""
    cls = "".join("AB"[c] for c in cfg.classes)
    return (
        f"{cls}-w{cfg.width}-it{cfg.iterations}-b{cfg.batch_size}-lr{cfg.lr_ref:g}-tref{cfg.t_ref:g}"
        f"-ema{cfg.ema_sigma_rel:g}-g{cfg.gain_init:g}-wu{cfg.warmup}-s{cfg.seed}"
    )


def get_model(cfg: ToyTrainConfig, retrain: bool = False):
    """(model, meta) for `cfg`, trained at one thread on first use and stored; meta['train_seconds'] is
    the wall time of that training."""
    folder = OUT / "models" / tag(cfg)
    path = folder / "models" / "m.safetensors"
    existed = path.exists()
    model, seconds, meta = obtain_model("m", cfg, folder, retrain, False, torch.device("cpu"))
    if not existed or retrain:
        info = {"train_seconds": seconds, "load_1min": os.getloadavg()[0], "threads": torch.get_num_threads()}
        atomic.write_json(folder / "train.json", info)
    info = json.loads((folder / "train.json").read_text()) if (folder / "train.json").exists() else {}
    return model, {**meta, **info, "file_bytes": path.stat().st_size}


def _cfg(name: str, training_seed: int, width, iterations, batch, lr, ema, **kw) -> ToyTrainConfig:
    """One of the default recipe's three models with the searched fields set."""
    return replace(
        DEFAULT_RECIPE[name],
        seed=training_seed,
        width=width,
        iterations=iterations,
        batch_size=batch,
        lr_ref=lr,
        ema_sigma_rel=ema,
        **kw,
    )


def main_cfg(seed: int, iterations=2048, batch=2048, lr=2e-2, ema=0.010, width=64, **kw) -> ToyTrainConfig:
    """Main model of model seed m (training seed 3m + 1), the default recipe's other fields."""
    return _cfg("main", 3 * seed + 1, width, iterations, batch, lr, ema, **kw)


def guide_cfg(seed: int, width=32, iterations=512, batch=2048, lr=2e-2, ema=0.010, same_seed=False, **kw):
    """Autoguidance guide of model seed m (training seed 3m + 2, or the main model's 3m + 1)."""
    return _cfg("guide", 3 * seed + (1 if same_seed else 2), width, iterations, batch, lr, ema, **kw)


def uncond_cfg(seed: int, width=32, iterations=512, batch=2048, lr=2e-2, ema=0.010, **kw):
    return _cfg("uncond", 3 * seed + 3, width, iterations, batch, lr, ema, **kw)


class Evaluator:
    """Samples of any method on the seeded noise of samples 0..n-1, scored exactly."""

    def __init__(self):
        s = SETTINGS
        self.class_a = ToyMixture((0,))
        self.sigmas = edm_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho)
        self.tau = outlier_threshold(self.class_a, s.tau_samples, s.tau_seed)
        self.reference = RecallReference.build(self.class_a, s.recall_samples, s.recall_seed)
        self._latents: dict[int, torch.Tensor] = {}

    def latents(self, n: int) -> torch.Tensor:
        if n not in self._latents:
            self._latents[n] = initial_latents(self.class_a, range(0, n), SETTINGS.sigma_max)
        return self._latents[n]

    def samples(self, models: dict, method: str, w: float, n: int) -> torch.Tensor:
        return sample(guided_denoisers(models, method, w), self.latents(n), self.sigmas, solver="heun")

    def score(self, x: torch.Tensor) -> dict:
        m = toy_metrics(self.class_a, x.detach().cpu().double(), self.tau, self.reference).to_dict()
        return {k: m[k] for k in KEYS}

    def measure(self, models: dict, method: str, w: float, n: int) -> dict:
        start = time.perf_counter()
        out = self.score(self.samples(models, method, w, n))
        out["seconds"] = time.perf_counter() - start
        return out

    def ground_truth(self, n: int) -> dict:
        return self.score(self.class_a.sample_seeded(SeedStreams(range(0, n))))


def spread(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
    }


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None
