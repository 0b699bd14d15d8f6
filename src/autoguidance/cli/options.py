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
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import click
import torch

from ..errors import UserInputError
from ..io import atomic
from ..io.edm2_presets import EDM2_PRESETS
from ..sampling import SamplerSettings
from .models import ModelOptions

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
        with renamed_fields({n: "--" + n.replace("_", "-") for n in names}):
            kwargs["sampler"] = SamplerSettings(**{n: kwargs.pop(n) for n in names})
        return f(*args, **kwargs)

    for option in reversed(_SAMPLER_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_MODEL_OPTIONS = (
    click.option(
        "--net",
        default=None,
        help="Main network: a checkpoint (.safetensors) or an EDM2 pickle (read without running its code).",
    ),
    click.option(
        "--guide",
        default=None,
        help="Guide network: a weaker model of the same task (autoguidance), or an unconditional one for "
        "a conditional net (CFG).",
    ),
    click.option("--guidance", default=None, help="Guidance weight W (1 = no guidance); generate: W1,W2,..."),
    click.option("--interval", default=None, help="LO,HI: use the guide only for LO < sigma <= HI."),
    click.option(
        "--uncond", default=None, help="An unconditional network for an extra CFG term beside --guide."
    ),
    click.option(
        "--uncond-guidance", type=float, default=1.0, show_default=True, help="Weight of the CFG term."
    ),
    click.option(
        "--preset",
        default=None,
        help="EDM2 configuration, e.g. edm2-img512-s-autog-fid: its main network, guide and weight "
        "(downloaded once into $AUTOGUIDANCE_CACHE, ~/.cache/autoguidance by default; --net, --guide or "
        "--guidance override its parts). One of: " + ", ".join(EDM2_PRESETS) + ".",
    ),
    click.option(
        "--weak-guide",
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


def model_options(f: Callable) -> Callable:
    """The models of a sampling command (main network, guide, weights, interval, CFG term, EDM2 presets,
    weak guides, precision, VAE); the command receives them as one `models: ModelOptions` argument."""

    fields = list(ModelOptions.__dataclass_fields__)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["models"] = ModelOptions(**{n: kwargs.pop(n) for n in fields})
        return f(*args, **kwargs)

    for option in reversed(_MODEL_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def check_store(store: str, flag: str = "--store") -> None:
    """A results store's location, before any work: a database URL is the server's business; a SQLite
    file must be writable where it is (not a folder, its folder creatable)."""
    if "://" not in str(store):
        atomic.check_file(Path(store).expanduser(), flag)


def versions() -> dict[str, str]:
    """The versions a run's JSON record names: this package's and torch's."""
    try:
        ours = importlib_metadata.version("autoguidance")
    except importlib_metadata.PackageNotFoundError:
        ours = "unknown"
    return {"autoguidance": ours, "torch": torch.__version__}


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
        names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
        # One pass, whole words only: a flag put in ("--model-seed") is not matched again ("seed").
        text = re.sub(rf"(?<![\w-])({names})(?![\w-])", lambda m: flags[m.group(1)], str(exc))
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
        "--inception-weights", default=None, help="Inception-v3 TorchScript for fid; docs/evaluation.md."
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
