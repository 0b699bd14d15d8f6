"""`autoguidance experiment NAME --out DIR`: the paper's experiments in miniature, resumable.

NAME is table1, sensitivity, curves, degradations or interpolation. The models each needs are trained
into DIR/runs (or taken from --run NAME=PATH), the configurations measured into DIR/store.db (or
--store), and DIR/NAME/ receives NAME.json, NAME.md and PNG plots; --redraw redraws them from the store
alone.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import click

from ..errors import UserInputError
from ..experiments import curves, degradations, interpolation, sensitivity, table1
from ..experiments.options import Options
from ..experiments.runs import Setup
from ..io import atomic
from ..sweeps.models import ModelCache
from ..sweeps.report import write_report
from ..sweeps.store import ResultStore
from .options import check_store, metric_source_options
from .session import progress_default, run_plan_everywhere

EXPERIMENTS = {
    "table1": table1.plan,
    "sensitivity": sensitivity.plan,
    "curves": curves.plan,
    "degradations": degradations.plan,
    "interpolation": interpolation.plan,
}
ROW_NAMES = {
    "table1": table1.ROWS,
    "sensitivity": ("time", "capacity", "ema"),
    "curves": ("none", "cfg", "interval", "autoguidance"),
}


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"--{name} must be numbers separated by commas, got {text!r}") from None
    if not values:
        raise UserInputError(f"empty grid: --{name} needs at least one value")
    return values


def _runs(items: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--run must be NAME=PATH (e.g. s=runs/mnist-s), got {item!r}")
        out[name] = Path(path)
    return out


def _fraction(text: str) -> Fraction:
    try:
        f = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise UserInputError(f"--guide-time must be a fraction of T such as 1/8, got {text!r}") from None
    if not 0 < f <= 1:
        raise UserInputError(f"--guide-time must lie in (0, 1], got {text}")
    return f


@click.command("experiment")
@click.argument("name", type=click.Choice(list(EXPERIMENTS)))
@click.option("--out", "out_dir", required=True, help="Experiment folder: runs/, cache/, store.db, NAME/.")
@click.option(
    "--store", "store_path", default=None, help="Results store [default: OUT/store.db]; any database URL."
)
@click.option(
    "--run", "runs", multiple=True, help="Use an existing run for a model: NAME=PATH (s, xs, xs-uncond, ...)."
)
@click.option("--redraw", is_flag=True, help="Only redraw the report from the store.")
@click.option("--steps", type=int, default=16, show_default=True, help="Heun steps per image.")
@click.option("--samples", type=int, default=1000, show_default=True, help="Images per configuration.")
@click.option("--w", "ws", default="1.5,2,2.5,3", show_default=True, help="Guidance weights.")
@click.option("--ema-main", default="0.07", show_default=True, help="Main model EMA lengths (sigma_rel).")
@click.option("--ema-guide", default="0.125", show_default=True, help="Guide EMA lengths (sigma_rel).")
@click.option("--guide-time", default="1/8", show_default=True, help="Guide training time, a fraction of T.")
@click.option("--interval", default="0.28,2.9", show_default=True, help="Guidance interval LO,HI (CFG rows).")
@click.option(
    "--rows", default=None, help="Only these rows/groups, e.g. none,autoguidance (table1: see docs)."
)
@click.option(
    "--duration", type=int, default=327680, show_default=True, help="T: the main model's training images."
)
@click.option("--metric", default="fd_classifier", show_default=True, help="The metric to optimise.")
@click.option("--metrics", "extra", default="pr_classifier,classes", show_default=True, help="Also recorded.")
@metric_source_options
@click.option("--batch", type=int, default=64, show_default=True)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait for other workers' configurations."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
def experiment(
    name,
    out_dir,
    store_path,
    runs,
    redraw,
    steps,
    samples,
    ws,
    ema_main,
    ema_guide,
    guide_time,
    interval,
    rows,
    duration,
    metric,
    extra,
    sources,
    batch,
    wait,
    device,
    progress,
):
    """Run (or resume, or redraw) one of the paper's experiments: table1, sensitivity, curves,
    degradations, interpolation."""
    out = Path(out_dir)
    atomic.check_dir(out, "--out")  # before any training, sampling or drawing
    store_path = store_path or str(out / "store.db")
    check_store(store_path)
    if redraw:
        summary = write_report(ResultStore(store_path), name, out / name)
        n, m = len(summary["files"]), summary["measured"]
        click.echo(f"{name}: redrew {n} figures from {m} stored results into {out / name}")
        return
    for flag, value in (("steps", steps), ("samples", samples), ("batch", batch)):
        if value < 1:
            raise UserInputError(f"--{flag} must be >= 1, got {value}")
    opts = _options(name, steps, samples, metric, ws, ema_main, ema_guide, guide_time, interval, rows)
    prog = progress_default(progress)
    setup = Setup(
        out,
        duration=duration,
        batch=64,
        overrides=_runs(runs),
        device=None if device == "auto" else device,
        progress=prog,
    )
    plan = EXPERIMENTS[name](setup, ModelCache(out / "cache"), opts)
    if not plan.groups:
        raise UserInputError(f"empty grid: no rows of {name} selected by --rows {rows}")
    metrics = [metric, *[m.strip() for m in extra.split(",") if m.strip()]]
    done = run_plan_everywhere(plan, store_path, out / "cache", metrics, sources, device, batch, wait, prog)
    if done is not None:
        summary = write_report(ResultStore(store_path), name, out / name)
        click.echo(f"{name}: report in {out / name} ({', '.join(summary['files'])}, {name}.md, {name}.json)")


def _options(name, steps, samples, metric, ws, ema_main, ema_guide, guide_time, interval, rows) -> Options:
    """The experiment's shared settings and grids from the flags, each checked (one line on error)."""
    iv = _floats(interval, "interval")
    if len(iv) != 2 or not 0 <= iv[0] < iv[1]:
        raise UserInputError(f"--interval must be LO,HI with 0 <= LO < HI, got {interval!r}")
    opts = Options(
        steps=steps,
        samples=samples,
        metric=metric,
        ws=_floats(ws, "w"),
        ema_main=_floats(ema_main, "ema-main"),
        ema_guide=_floats(ema_guide, "ema-guide"),
        guide_time=_fraction(guide_time),
        interval=iv,
        rows=[r.strip() for r in rows.split(",") if r.strip()] if rows else None,
    )
    if opts.rows is not None:
        known = ROW_NAMES.get(name, ())
        bad = [r for r in opts.rows if r not in known]
        if bad:
            raise UserInputError(
                f"--rows: {name} has no row {bad[0]!r}; its rows: {', '.join(known) or 'none'}"
            )
    return opts
