"""`autoguidance phema`: networks with any EMA length, reconstructed post hoc from a run's snapshots.

autoguidance phema --run runs/s --sigma-rel 0.05,0.10 [--at IMAGES] [--out DIR]
"""

from __future__ import annotations

import click

from ..errors import UserInputError
from ..io import atomic
from ..training.export import export_phema, parse_sigma_rels
from ..training.phema import list_snapshots


@click.command("phema")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Training run folder.")
@click.option("--sigma-rel", "sigma_rels", required=True, help="EMA widths, e.g. 0.05,0.10.")
@click.option(
    "--at",
    "at_images",
    type=click.IntRange(min=1),
    default=None,
    help="Training images at which to reconstruct (a time with snapshots) [default: the latest].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(),
    default=None,
    help="Output folder (created) [default: the run folder].",
)
def phema(run_dir: str, sigma_rels: str, at_images: int | None, out_dir: str | None) -> None:
    """Write network-phema-<sigma_rel>.safetensors for each requested EMA width."""
    widths = parse_sigma_rels(sigma_rels)
    infos = list_snapshots(run_dir)  # a run without snapshots fails here, before anything else
    at_step = None
    if at_images is not None:
        steps = {round(s.t): s.step for s in infos}
        if at_images not in steps:
            times = sorted(steps)
            raise UserInputError(
                f"--at {at_images}: no snapshots at that many images; snapshots from {times[0]} to "
                f"{times[-1]} images ({len(times)} times)"
            )
        at_step = steps[at_images]
    atomic.check_dir(out_dir if out_dir is not None else run_dir, "--out" if out_dir else "--run")
    for path in export_phema(run_dir, widths, at_step, out_dir):
        click.echo(str(path))
