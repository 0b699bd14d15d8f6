"""`autoguidance toy`, `toy-sweep` and `toy-plot`: the 2D toy reproduction (paper Figures 1, 2 and 9),
its guidance-strength sweep, and redrawing from stored results."""

from __future__ import annotations

import json

import click

from ..errors import UserInputError
from ..io import atomic
from .options import renamed_fields


def _finite_float(ctx, param, value):
    if value is None:
        return value
    try:
        v = float(value)
    except ValueError:
        raise UserInputError(f"--{param.name.replace('_', '-')} must be a number, got {value!r}") from None
    return v


def model_options(fn):
    """Options shared by `toy` and `toy-sweep`: which models (recipe, seeds, guide) and where they run."""
    options = [
        click.option(
            "--out",
            default="out/toy",
            show_default=True,
            type=click.Path(file_okay=False),
            help="Output folder.",
        ),
        click.option(
            "--recipe",
            type=click.Choice(["default", "paper"]),
            default="default",
            show_default=True,
            help="Training recipe: ours (every seed lands in the good basin) or the paper's.",
        ),
        click.option("--model-seed", type=int, default=0, show_default=True, help="Seeds the three models."),
        click.option("--guide-width", type=int, default=None, help="Guide width [64; paper: 32]."),
        click.option("--guide-iterations", type=int, default=None, help="Guide's training iterations [512]."),
        click.option(
            "--guide-ema", callback=_finite_float, default=None, help="Guide's EMA length sigma_rel [0.01]."
        ),
        click.option("--samples", type=int, default=None, help="Samples per method [16384; --quick: 2048]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed SEED + i."),
        click.option(
            "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
        ),
        click.option("--quick", is_flag=True, help="Tiny models, few samples: a smoke test, NOT meaningful."),
        click.option("--retrain", is_flag=True, help="Train the models even if saved or shipped ones match."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


TOY_FLAGS = {
    name: "--" + name.replace("_", "-")
    for name in (
        "recipe", "model_seed", "guide_width", "guide_iterations", "guide_ema", "samples", "seed", "guidance",
        "cfg_guidance", "truncation", "weights", "truncation_scales",
    )
}  # fmt: skip


def make_settings(out, quick, samples, **kw):
    """The toy's settings from the options, every input (the output folder too) checked before work."""
    from ..toy.experiment import ToySettings

    atomic.check_dir(out, "--out")
    if samples is not None:
        kw["samples"] = samples
    with renamed_fields(TOY_FLAGS):
        return ToySettings.create(quick=quick, **kw)


@click.command()
@model_options
@click.option(
    "--guidance", callback=_finite_float, default="2.5", show_default=True, help="Autoguidance weight w."
)
@click.option("--cfg-guidance", callback=_finite_float, default="4", show_default=True, help="CFG weight w.")
@click.option(
    "--truncation",
    callback=_finite_float,
    default="1.4",
    show_default=True,
    help="Score scale of naive truncation.",
)
def toy(out, retrain, progress, **kw):
    """Sample the toy five ways with its three models (the default recipe's ship with the package; others
    are trained), measure, and draw Figures 1, 2 and 9."""
    from ..toy.experiment import run_toy

    settings = make_settings(out, **kw)
    metrics = run_toy(settings, out, retrain=retrain, progress=progress)
    rows = [
        f"{'method':<14}{'outliers':>9}{'branch_tv':>10}{'depth_tv':>9}{'within':>8}{'outer':>7}"
        f"{'recall':>8}{'rec_out':>8}"
    ]
    for name, m in metrics["methods"].items():
        rows.append(
            f"{name:<14}{m['outlier_fraction']:>9.4f}{m['branch_tv']:>10.3f}{m['depth_tv']:>9.3f}"
            f"{m['within_depth_tv']:>8.3f}{m['outer_depth_ratio']:>7.2f}{m['recall']:>8.3f}{m['recall_outer']:>8.3f}"
        )
    click.echo("\n".join(rows))
    unguided, ag = (metrics["methods"][k]["outlier_fraction"] for k in ("unguided", "autoguidance"))
    if unguided > 0:
        removed = 100 * (1 - ag / unguided)
        click.echo(f"autoguidance, w = {settings.guidance:g}: {removed:.1f}% fewer outliers than unguided")
    losses = ", ".join(f"{k} {v['heldout_loss']:.4f}" for k, v in metrics["models"].items())
    click.echo(f"exact held-out loss: {losses}")
    if "note" in metrics:
        click.echo(f"NOTE: {metrics['note']}")
    click.echo(
        f"total {metrics['timings']['total']:.1f} s; wrote {out}/figure1.png, figure2.png, figure9.png, "
        "metrics.json"
    )


@click.command("toy-sweep")
@model_options
@click.option(
    "--weights",
    default="1,1.25,1.5,2,2.5,3,3.5,4",
    show_default=True,
    help="Guidance strengths of autoguidance and CFG, comma-separated, each >= 1.",
)
@click.option(
    "--truncation-scales",
    default="1,1.02,1.04,1.06,1.08,1.1,1.15,1.25,1.5",
    show_default=True,
    help="Score scales of naive truncation, comma-separated, each >= 1.",
)
def toy_sweep(out, retrain, progress, weights, truncation_scales, **kw):
    """Outliers, branch TV, depth TV and recall against guidance strength for autoguidance, CFG and
    truncation, and each method at autoguidance's outlier levels: sweep.json and the trade-off front
    front.png (models of OUT reused; shipped or trained if missing)."""
    from ..toy.sweep import comparison_table, front_table, parse_weights, run_sweep

    with renamed_fields(TOY_FLAGS):
        w = parse_weights(weights)
        scales = parse_weights(truncation_scales, "truncation_scales")
    if kw["samples"] is None and not kw["quick"]:
        kw["samples"] = 8192
    settings = make_settings(out, **kw)
    result = run_sweep(settings, out, w, retrain=retrain, progress=progress, truncation_scales=scales)
    click.echo(front_table(result))
    click.echo("\nat autoguidance's outlier levels (interpolated along each curve):")
    click.echo(comparison_table(result))
    if "note" in result:
        click.echo(f"NOTE: {result['note']}")
    click.echo(f"sweep {result['timings']['sweep']:.1f} s; wrote {out}/sweep.json, front.png")


@click.command("toy-plot")
@click.option("--out", default="out/toy", show_default=True, type=click.Path(file_okay=False))
def toy_plot(out):
    """Redraw the toy figures (and the sweep's front, if there is one) from stored results."""
    from pathlib import Path

    from ..toy.figures import draw_figures, draw_front

    atomic.check_dir(out, "--out")
    paths = list(draw_figures(out))
    sweep = Path(out) / "sweep.json"
    if sweep.exists():
        draw_front(json.loads(sweep.read_text()), Path(out) / "front.png")
        paths.append(Path(out) / "front.png")
    click.echo(json.dumps([str(p) for p in paths]))
