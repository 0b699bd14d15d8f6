"""The paper's 2D toy experiment (Figures 1 and 2): three models trained against the exact score,
five ways of sampling class A, exact metrics, and the arrays the figures are drawn from.

Stages, each reusing what a previous run stored: models (out/models/*.safetensors, reused unless
`retrain`), then sampling and metrics (results.npz, metrics.json), then figures (figure1.png,
figure2.png), which `experiments.toy_plots` redraws from results.npz alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import atomic
from ..errors import UserInputError
from ..guidance import autoguidance, check_weight, classifier_free, truncation
from ..metrics.toy import outlier_threshold, toy_metrics
from ..sampling import edm_sigmas, sample
from ..seeds import SeedStreams
from ..toy.io import load_toy_model, save_toy_model
from ..toy.mixture import ToyMixture
from ..toy.model import ToyModel
from ..toy.train import ToyTrainConfig, train_toy_model

METHODS = ("ground_truth", "unguided", "cfg", "truncation", "autoguidance")
# The paper's models (App. C.1): main = class A, width 64, 4096 iterations; autoguidance guide = same
# task, smaller and shorter trained; CFG guide = both classes (unconditional), as small and as short.
MODEL_SPECS = {
    "main": ToyTrainConfig(classes=(0,), width=64, iterations=4096, seed=1),
    "guide": ToyTrainConfig(classes=(0,), width=32, iterations=512, seed=2),
    "uncond": ToyTrainConfig(classes=(0, 1), width=32, iterations=512, seed=3),
}


@dataclass(frozen=True)
class ToySettings:
    guidance: float = 3.0  # autoguidance weight w
    cfg_guidance: float = 4.0
    truncation: float = 1.4  # score scale lambda of naive truncation
    samples: int = 16384
    seed: int = 0  # sample i uses seed `seed + i`
    num_steps: int = 32
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    rho: float = 7.0
    tau_samples: int = 2**20
    tau_seed: int = 0
    figure_sigma: float = 0.03
    figure_box: tuple[float, float, float, float] = (0.22, 0.62, 0.60, 1.00)  # x0, x1, y0, y1: one fork
    device: str = "cpu"
    quick: bool = False
    models: dict = field(default_factory=lambda: {k: v.to_dict() for k, v in MODEL_SPECS.items()})

    def __post_init__(self) -> None:
        check_weight(self.guidance, "--guidance")
        check_weight(self.cfg_guidance, "--cfg-guidance")
        check_weight(self.truncation, "--truncation")
        if self.samples < 1:
            raise UserInputError(f"--samples must be >= 1, got {self.samples}")
        if not 0 <= self.seed < 2**62:
            raise UserInputError(f"--seed must lie in [0, 2^62), got {self.seed}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserInputError(f"--device must be cpu or cuda[:N], got {self.device!r}")
        if self.device != "cpu" and not torch.cuda.is_available():
            raise UserInputError(f"--device {self.device}: CUDA is not available on this machine")

    @classmethod
    def quick_settings(cls, **overrides) -> ToySettings:
        """Small and fast (seconds), for tests and smoke runs; the story is noisier."""
        models = {
            "main": replace(MODEL_SPECS["main"], iterations=300, batch_size=1024).to_dict(),
            "guide": replace(MODEL_SPECS["guide"], iterations=60, batch_size=1024).to_dict(),
            "uncond": replace(MODEL_SPECS["uncond"], iterations=60, batch_size=1024).to_dict(),
        }
        base = dict(samples=2048, tau_samples=2**16, num_steps=16, quick=True)
        return cls(**{**base, "models": models, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["figure_box"] = list(self.figure_box)
        return d


def train_config(d: dict) -> ToyTrainConfig:
    return ToyTrainConfig(**{**d, "classes": tuple(d["classes"])})


def obtain_model(
    name: str, cfg: ToyTrainConfig, out: Path, retrain: bool, progress: bool, device: torch.device
) -> tuple[ToyModel, float]:
    """Load out/models/<name>.safetensors if it was trained with `cfg`, else train and save it."""
    path = out / "models" / f"{name}.safetensors"
    if path.exists() and not retrain:
        model, meta = load_toy_model(path, device)
        if meta.get("training") != cfg.to_dict():
            raise UserInputError(
                f"saved model {path} was trained with other settings than requested; "
                "pass --retrain or choose another --out"
            )
        return model, 0.0
    start = time.perf_counter()
    model, losses = train_toy_model(cfg, progress=progress, device=device)
    seconds = time.perf_counter() - start
    meta = {"training": cfg.to_dict(), "final_loss": float(np.mean(losses[-32:])), "train_seconds": seconds}
    save_toy_model(path, model, meta)
    return model, seconds


def initial_latents(class_a: ToyMixture, seeds: range, sigma_max: float) -> torch.Tensor:
    """x_0 / sigma_max where x_0 ~ p_A(x; sigma_max): class A diffused to the starting noise level,
    drawn per seed so that a sample does not depend on the batch it is in."""
    return class_a.sample_seeded(SeedStreams(seeds), sigma=sigma_max) / sigma_max


def run_toy(settings: ToySettings, out: str | Path, retrain: bool = False, progress: bool = True) -> dict:
    """Run the whole experiment into `out`; returns the metrics dict (also written to metrics.json)."""
    out = Path(out)
    device = torch.device(settings.device)
    timings: dict[str, float] = {}
    class_a = ToyMixture((0,))

    models = {}
    for name, spec in settings.models.items():
        models[name], timings[f"train_{name}"] = obtain_model(
            name, train_config(spec), out, retrain, progress, device
        )

    sigmas = edm_sigmas(settings.num_steps, settings.sigma_min, settings.sigma_max, settings.rho)
    seeds = range(settings.seed, settings.seed + settings.samples)
    start = time.perf_counter()
    latents = initial_latents(class_a, seeds, settings.sigma_max).to(device)
    timings["initial_noise"] = time.perf_counter() - start
    main = models["main"]
    denoisers = {
        "unguided": main,
        "cfg": classifier_free(main, models["uncond"], settings.cfg_guidance),
        "truncation": truncation(main, settings.truncation),
        "autoguidance": autoguidance(main, models["guide"], settings.guidance),
    }
    samples = {"ground_truth": class_a.sample_seeded(SeedStreams(seeds))}
    trajectories = {}  # unguided and autoguided paths, for Figure 2
    for name in tqdm(denoisers, desc="sampling methods", disable=None if progress else True, leave=False):
        start = time.perf_counter()
        keep = name in ("unguided", "autoguidance")
        result = sample(denoisers[name], latents, sigmas, solver="heun", return_trajectory=keep)
        if keep:
            result, trajectories[name] = result[0], result[1].states.detach().cpu()
        samples[name] = result.detach().cpu()
        timings[f"sample_{name}"] = time.perf_counter() - start

    start = time.perf_counter()
    tau = outlier_threshold(class_a, settings.tau_samples, settings.tau_seed)
    methods = {name: toy_metrics(class_a, samples[name].double(), tau).to_dict() for name in METHODS}
    timings["metrics"] = time.perf_counter() - start

    start = time.perf_counter()
    from .toy_figure_data import figure2_arrays

    fig2 = figure2_arrays(settings, class_a, models, trajectories, sigmas)
    timings["figure2_data"] = time.perf_counter() - start

    arrays = {f"samples_{k}": v.numpy().astype(np.float32) for k, v in samples.items()}
    arrays.update(fig2)
    atomic.write_with(out / "results.npz", lambda p: np.savez_compressed(open(p, "wb"), **arrays))
    metrics = {
        "methods": methods,
        "outlier_threshold_tau": tau,
        "settings": settings.to_dict(),
        "timings": timings,
    }
    atomic.write_json(out / "metrics.json", metrics)

    start = time.perf_counter()
    from .toy_plots import draw_figures

    draw_figures(out)
    metrics["timings"]["figures"] = time.perf_counter() - start
    metrics["timings"]["total"] = sum(metrics["timings"].values())
    atomic.write_json(out / "metrics.json", metrics)
    return metrics
