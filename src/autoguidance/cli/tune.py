"""`autoguidance tune`: the best (w, EMA_main, EMA_guide) for one metric by adaptive search.

Each proposed configuration is measured on 1/8, 1/4, ... of the samples (one seed list: common random
numbers) and stopped early when it trails the others at that count (successive halving); the best is
reported with its metric at the full count. The study lives in the store: rerun to continue or to add
trials, or run several workers against one store.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from .. import distributed
from ..errors import UserInputError
from ..io import atomic
from ..sweeps.configs import describe, normalise
from ..sweeps.evaluator import ImageEvaluator
from ..sweeps.measure import MetricsMeasure, direction_of
from ..sweeps.models import ModelCache
from ..sweeps.store import ResultStore
from ..sweeps.tune import Range, run_tune
from .options import check_store, metric_source_options
from .session import progress_default


def _range(text: str, name: str, log: bool) -> Range | float:
    """'1,4' -> a searched Range; '2' -> a fixed value."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserInputError(
            f"--{name} must be LO,HI (searched) or one number (fixed), got {text!r}"
        ) from None
    if len(values) == 1:
        return values[0]
    if len(values) != 2:
        raise UserInputError(f"--{name} must be LO,HI (searched) or one number (fixed), got {text!r}")
    return Range(values[0], values[1], log=log)


@click.command("tune")
@click.option("--main-run", required=True, help="Main model: training run folder (or network file).")
@click.option("--guide-run", required=True, help="Guide: training run folder (or network file).")
@click.option(
    "--guide-at",
    type=int,
    default=None,
    help="Guide training time in images (a snapshot time) [default: latest].",
)
@click.option(
    "--w", "w_text", default="1,4", show_default=True, help="Guidance weight range LO,HI (or one value)."
)
@click.option(
    "--ema-main", default="0.02,0.25", show_default=True, help="Main EMA range (log scale) or value."
)
@click.option(
    "--ema-guide", default="0.02,0.25", show_default=True, help="Guide EMA range (log scale) or value."
)
@click.option("--trials", type=int, default=30, show_default=True, help="Configurations to try in all.")
@click.option("--samples", type=int, default=1000, show_default=True, help="Images at the full count.")
@click.option("--first-samples", type=int, default=125, show_default=True, help="Images at the first rung.")
@click.option("--steps", type=int, default=16, show_default=True, help="Heun steps per image.")
@click.option("--metric", default="fd_classifier", show_default=True)
@metric_source_options
@click.option("--store", "store_path", required=True, help="Results store: a SQLite file or a database URL.")
@click.option("--name", default="tune", show_default=True, help="Study name in the store.")
@click.option(
    "--cache",
    "cache_dir",
    default=None,
    help="Folder for reconstructed networks [default: beside the store].",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the search (not of the images)."
)
@click.option("--out", "out_file", default=None, help="Write the result as JSON here.")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
def tune(
    main_run,
    guide_run,
    guide_at,
    w_text,
    ema_main,
    ema_guide,
    trials,
    samples,
    first_samples,
    steps,
    metric,
    sources,
    store_path,
    name,
    cache_dir,
    seed,
    out_file,
    batch,
    device,
    progress,
):
    """Find the best guidance weight and EMA lengths for METRIC with few evaluations.

    \f
    (Long only by its parameter list: click passes one argument per option.)
    """
    if trials < 1:
        raise UserInputError(f"--trials must be >= 1, got {trials}")
    base, space = _search(main_run, guide_run, guide_at, w_text, ema_main, ema_guide, steps, samples)
    check_store(store_path)
    if out_file:
        atomic.check_file(out_file, "--out")
    if cache_dir:
        atomic.check_dir(cache_dir, "--cache")
    d = distributed.setup(device)
    if d.world_size > 1:
        d.close()
        raise UserInputError(
            "tune runs one process per worker: start several `tune` workers on one store instead"
        )
    models = ModelCache(
        Path(cache_dir) if cache_dir else Path(store_path).expanduser().resolve().parent / "cache", d.device
    )
    evaluator = ImageEvaluator(
        models, MetricsMeasure([metric], device=d.device, **sources), batch, progress_default(progress)
    )
    result = run_tune(
        ResultStore(store_path),
        name,
        base,
        space,
        evaluator.at,
        metric,
        samples=samples,
        first_samples=first_samples,
        trials=trials,
        direction=direction_of(metric),
        seed=seed,
        on_trial=lambda n, c, k, v: click.echo(
            f"  trial {n}: {describe(c)} at {k} samples: {metric} {v:.4g}"
        ),
    )
    click.echo(
        f"best: {describe(result.best_config)}: {metric} {result.best_value:.4g} at {samples} samples "
        f"({result.trials} trials, {result.complete} at the full count, {result.evaluations:.1f} full-count "
        "evaluations in all)"
    )
    if out_file:
        atomic.write_json(out_file, dataclasses.asdict(result))


def _search(main_run, guide_run, guide_at, w_text, ema_main, ema_guide, steps, samples):
    """(the fixed part of every configuration, the searched ranges), every field checked before work."""
    searched = {
        "w": _range(w_text, "w", False),
        "main_ema": _range(ema_main, "ema-main", True),
        "guide_ema": _range(ema_guide, "ema-guide", True),
    }
    space = {k: v for k, v in searched.items() if isinstance(v, Range)}
    if not space:
        raise UserInputError("nothing to tune: the search space is empty (give LO,HI for --w or an EMA)")
    fixed = {k: v for k, v in searched.items() if not isinstance(v, Range)}
    base = {
        "kind": "autoguidance",
        "main_run": main_run,
        "guide_run": guide_run,
        "guide_at": guide_at,
        "steps": steps,
        "samples": samples,
        **fixed,
    }
    probe = {**base, **{k: r.lo for k, r in space.items()}}
    normalised = normalise(probe)  # checks every fixed field before any work
    return {k: v for k, v in normalised.items() if k not in space}, space
