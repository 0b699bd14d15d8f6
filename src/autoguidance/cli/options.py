"""Click options shared by the commands, so that every command spells, defaults and documents them alike.

- `--device {auto,cpu,cuda}`, default auto (CUDA when available).
- `--progress/--no-progress`: a progress bar when stderr is a terminal, periodic log lines otherwise;
  `--no-progress` silences both.
- The sampler's settings (steps, sigma range, rho, solver, churn), for every command that samples; they
  come back as one `SamplerSettings`, which the command records in its outputs.
- `--batch`: always the number of images processed together in one step *over all processes*.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import click

from ..errors import UserInputError, check_int
from ..io.edm2_presets import EDM2_PRESETS
from ..sampling import Churn, edm_sigmas

DEVICES = ("auto", "cpu", "cuda")


def device_option(f: Callable) -> Callable:
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default="auto",
        show_default=True,
        help="Compute device: auto picks cuda when available, else cpu.",
    )(f)


def progress_option(f: Callable) -> Callable:
    return click.option(
        "--progress/--no-progress",
        default=True,
        show_default=True,
        help="Progress bar on a terminal, periodic log lines otherwise; --no-progress: neither.",
    )(f)


@dataclass(frozen=True)
class SamplerSettings:
    """The EDM sampler's settings (EDM, Karras et al. 2022, eq. 5 and Algorithm 2).

    steps N: noise levels before sigma = 0 (Heun: 2N - 1 evaluations, Euler: N). sigma_min, sigma_max,
    rho: the schedule of EDM eq. 5. churn (S_churn), s_tmin, s_tmax, s_noise: Algorithm 2's stochasticity
    (churn 0 is the deterministic ODE sampler).
    """

    steps: int = 32
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"
    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        check_int("--steps", self.steps, minimum=1)
        if not (0 < self.sigma_min <= self.sigma_max < math.inf):
            raise UserInputError(
                f"--sigma-min and --sigma-max need 0 < sigma-min <= sigma-max < inf, "
                f"got {self.sigma_min} and {self.sigma_max}"
            )
        if not (math.isfinite(self.rho) and self.rho > 0):
            raise UserInputError(f"--rho must be a positive number, got {self.rho}")
        if self.solver not in ("heun", "euler"):
            raise UserInputError(f"--solver must be heun or euler, got {self.solver!r}")
        if not (math.isfinite(self.churn) and self.churn >= 0):
            raise UserInputError(f"--churn must be a number >= 0, got {self.churn}")
        if not (self.s_tmin >= 0 and self.s_tmax >= self.s_tmin):
            raise UserInputError(
                f"--s-tmin/--s-tmax need 0 <= s-tmin <= s-tmax, got {self.s_tmin}, {self.s_tmax}"
            )
        if not (math.isfinite(self.s_noise) and self.s_noise > 0):
            raise UserInputError(f"--s-noise must be a positive number, got {self.s_noise}")

    def sigmas(self):
        return edm_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)

    def churn_settings(self) -> Churn | None:
        if self.churn == 0:
            return None
        return Churn(s_churn=self.churn, s_min=self.s_tmin, s_max=self.s_tmax, s_noise=self.s_noise)

    def generate_kwargs(self) -> dict[str, Any]:
        """These settings as the keyword arguments of `generation.generate_images`."""
        return dict(
            num_steps=self.steps,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            rho=self.rho,
            solver=self.solver,
            churn=self.churn_settings(),
        )

    def evaluations(self) -> int:
        """Denoiser evaluations per sample (the last Heun step to sigma = 0 is an Euler step)."""
        return 2 * self.steps - 1 if self.solver == "heun" else self.steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["s_tmax"] = None if math.isinf(self.s_tmax) else self.s_tmax  # JSON has no infinity
        return d


_SAMPLER_OPTIONS = (
    click.option("--steps", type=int, default=32, show_default=True, help="Sampler steps N (noise levels)."),
    click.option("--sigma-min", type=float, default=0.002, show_default=True, help="Lowest noise level."),
    click.option("--sigma-max", type=float, default=80.0, show_default=True, help="Highest noise level."),
    click.option("--rho", type=float, default=7.0, show_default=True, help="Schedule exponent (EDM eq. 5)."),
    click.option(
        "--solver",
        type=click.Choice(["heun", "euler"]),
        default="heun",
        show_default=True,
        help="Heun: 2N - 1 evaluations per image; Euler: N.",
    ),
    click.option(
        "--churn", type=float, default=0.0, show_default=True, help="S_churn of EDM Algorithm 2 (0: ODE)."
    ),
    click.option(
        "--s-tmin", type=float, default=0.0, show_default=True, help="Churn only for sigma >= this."
    ),
    click.option(
        "--s-tmax", type=float, default=math.inf, help="Churn only for sigma <= this [default: inf]."
    ),
    click.option("--s-noise", type=float, default=1.0, show_default=True, help="Scale of the churn noise."),
)


def sampler_options(f: Callable) -> Callable:
    """Add the sampler options; the command receives them as one `sampler: SamplerSettings` argument."""
    names = ("steps", "sigma_min", "sigma_max", "rho", "solver", "churn", "s_tmin", "s_tmax", "s_noise")

    @functools.wraps(f)  # keeps the options already attached to f (click's __click_params__)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["sampler"] = SamplerSettings(**{n: kwargs.pop(n) for n in names})
        return f(*args, **kwargs)

    for option in reversed(_SAMPLER_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_MODEL_SOURCE_OPTIONS = (
    click.option(
        "--preset",
        default=None,
        help="EDM2 configuration, e.g. edm2-img512-s-autog-fid: its main network, guide and weight "
        "(downloaded once into $AUTOGUIDANCE_CACHE, ~/.cache/autoguidance by default; --net, --guide or "
        "--guidance override its parts). One of: " + ", ".join(EDM2_PRESETS) + ".",
    ),
    click.option(
        "--weak-guide",
        "weak_guide_spec",
        default=None,
        help="A guide derived from the main network without training: dropout:P, input-noise:R, "
        "skip:BLOCK[+BLOCK], quantize:BITS or precision:bf16|fp16 (instead of --guide).",
    ),
    click.option(
        "--weak-guide-seed", type=int, default=0, show_default=True, help="Seed of a random weak guide."
    ),
    click.option(
        "--dtype",
        type=click.Choice(["fp32", "fp16", "bf16"]),
        default="fp32",
        show_default=True,
        help="Precision of the networks' bodies (EDM2 runs fp16 on GPUs; the preconditioning stays fp32).",
    ),
    click.option("--vae", default=None, help="VAE for latent networks (diffusers folder or hub name)."),
)


def model_source_options(f: Callable) -> Callable:
    """Models from elsewhere (interop/), for every command that generates: --preset (EDM2's published
    configurations), --weak-guide and --weak-guide-seed (training-free guides), --dtype, --vae."""
    for option in reversed(_MODEL_SOURCE_OPTIONS):
        f = option(f)
    return f


def int_list(flag: str, text: str, allow_none: bool = False) -> tuple[int, ...]:
    """'1,2,2' -> (1, 2, 2) for `flag`; 'none' -> () when allowed; UserInputError naming the flag."""
    if allow_none and text.strip().lower() == "none":
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserInputError(f"{flag} must be a comma-separated list of integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise UserInputError(f"{flag} values must be >= 1, got {text!r}")
    return values


@contextlib.contextmanager
def renamed_fields(flags: dict[str, str]) -> Iterator[None]:
    """Re-raise a UserInputError from the library with its config field names replaced by the flags that
    set them (e.g. 'num_blocks' -> '--blocks'), so that the message names what the user typed."""
    try:
        yield
    except UserInputError as exc:
        text = str(exc)
        for field, flag in flags.items():
            text = re.sub(rf"\b{field}\b", flag, text)
        if text == str(exc):
            raise
        raise type(exc)(text) from None


_METRIC_SOURCE_OPTIONS = (
    click.option("--reference", default="mnist", show_default=True, help="Reference dataset of the metrics."),
    click.option(
        "--ref-stats",
        "ref_stats",
        multiple=True,
        help="A reference statistics file for one detector (ours: .safetensors; EDM2: .pkl), used for that "
        "detector instead of computing --reference's statistics. Repeatable.",
    ),
    click.option(
        "--inception-weights", default=None, help="TorchScript Inception-v3 file for fid (see README)."
    ),
    click.option("--dinov2-weights", default=None, help="Hugging Face DINOv2 directory for fd_dinov2."),
)


def metric_source_options(f: Callable) -> Callable:
    """Where the sweep commands' metrics take their references and detector weights from; the command
    receives them as one `sources` dict (MetricsMeasure's keyword arguments)."""
    names = ("reference", "ref_stats", "inception_weights", "dinov2_weights")

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["sources"] = {n: kwargs.pop(n) for n in names}
        return f(*args, **kwargs)

    for option in reversed(_METRIC_SOURCE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
