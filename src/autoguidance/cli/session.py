"""Running sweeps and experiments from the command line: store, models, metrics and torchrun together."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import distributed
from ..sweeps.configs import describe
from ..sweeps.evaluator import ImageEvaluator, Measure, check_config
from ..sweeps.measure import MetricsMeasure
from ..sweeps.models import ModelCache
from ..sweeps.parallel import finish, follow, leader
from ..sweeps.plan import Plan, run_plan
from ..sweeps.store import ResultStore


def progress_default(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _nothing(images, labels) -> dict:
    return {}


def run_plan_everywhere(
    plan: Plan,
    store_path: str,
    cache_dir: Path,
    metrics: list[str],
    sources: dict[str, Any],
    device: str,
    batch: int,
    wait: bool,
    progress: bool,
    echo: Callable[[str], None] = click.echo,
    measure: Measure | None = None,
) -> dict[str, Any] | None:
    """Measure the plan's missing configurations, on this process or as one rank of torchrun.

    sources: MetricsMeasure's reference and weights (reference, ref_stats, inception_weights,
    dinov2_weights). measure: the metrics (default: the metrics package's, by name). Returns rank 0's
    summary (None on other ranks)."""
    d = distributed.setup(device, backend="gloo")
    try:
        models = ModelCache(cache_dir, device=d.device)
        for config in plan.configs():
            check_config(config, models)  # one-line errors before any work
        if not d.is_main:
            measure = _nothing  # rank 0 measures the gathered images
        elif measure is None:
            measure = MetricsMeasure(metrics, device=d.device, **sources)
        evaluator = ImageEvaluator(models, measure, batch_size=batch, progress=progress and d.is_main)
        if not d.is_main:
            follow(evaluator)
            return None
        store = ResultStore(store_path)
        t0 = time.perf_counter()
        total = len(plan.configs())

        def report(config: dict, m: dict) -> None:
            elapsed = time.perf_counter() - t0
            echo(f"  {describe(config)}: {plan.metric} {m[plan.metric]:.4g}  [{elapsed:.0f} s]")

        try:
            result = run_plan(store, plan, leader(evaluator), wait=wait, on_result=report)
        finally:
            finish()
        echo(
            f"{plan.name}: {result.evaluated} configurations measured now, {result.copied} copied from other "
            f"experiments, {result.skipped} already in the store, {total} in all "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        return {"evaluated": result.evaluated, "skipped": result.skipped, "total": total}
    finally:
        d.close()
