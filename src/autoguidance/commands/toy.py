"""`autoguidance toy`: the 2D toy reproduction (paper Figures 1 and 2) with exact metrics."""

from __future__ import annotations

import json

import click

from ..errors import UserInputError


def _finite_float(ctx, param, value):
    if value is None:
        return value
    try:
        v = float(value)
    except ValueError:
        raise UserInputError(f"--{param.name.replace('_', '-')} must be a number, got {value!r}") from None
    return v


@click.command()
@click.option(
    "--out", default="out/toy", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--guidance", callback=_finite_float, default="3", show_default=True, help="Autoguidance weight w."
)
@click.option("--cfg-guidance", callback=_finite_float, default="4", show_default=True, help="CFG weight w.")
@click.option(
    "--truncation",
    callback=_finite_float,
    default="1.4",
    show_default=True,
    help="Score scale of naive truncation.",
)
@click.option("--samples", type=int, default=None, help="Samples per method [16384; --quick: 2048].")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed SEED + i.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--quick", is_flag=True, help="Small models and few samples: seconds, for smoke tests.")
@click.option("--retrain", is_flag=True, help="Train the models again even if saved ones match.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def toy(out, guidance, cfg_guidance, truncation, samples, seed, device, quick, retrain, no_progress):
    """Train the three toy models, sample five ways, measure, and draw figure1.png and figure2.png."""
    from ..experiments.toy import ToySettings, run_toy

    kw = dict(guidance=guidance, cfg_guidance=cfg_guidance, truncation=truncation, seed=seed, device=device)
    if samples is not None:
        kw["samples"] = samples
    settings = ToySettings.quick_settings(**kw) if quick else ToySettings(**kw)
    metrics = run_toy(settings, out, retrain=retrain, progress=not no_progress)
    rows = [f"{'method':<14}{'outliers':>10}{'branch_tv':>11}{'mean_logp':>14}"]
    for name, m in metrics["methods"].items():
        rows.append(f"{name:<14}{m['outlier_fraction']:>10.4f}{m['branch_tv']:>11.3f}{m['mean_logp']:>14.4g}")
    click.echo("\n".join(rows))
    click.echo(
        f"total {metrics['timings']['total']:.1f} s; wrote {out}/figure1.png, figure2.png, metrics.json"
    )


@click.command("toy-plot")
@click.option("--out", default="out/toy", show_default=True, type=click.Path(file_okay=False))
def toy_plot(out):
    """Redraw the toy figures from stored results, without resampling."""
    from ..experiments.toy_plots import draw_figures

    paths = draw_figures(out)
    click.echo(json.dumps([str(p) for p in paths]))
