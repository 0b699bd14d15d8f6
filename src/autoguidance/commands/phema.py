"""`autoguidance phema`: networks with any EMA length, reconstructed post hoc from a run's snapshots.

autoguidance phema --run runs/s --sigma-rel 0.05,0.10 [--at STEP] [--out DIR]
"""

from __future__ import annotations

import click

from ..training.export import export_phema, parse_sigma_rels


@click.command("phema")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Training run.")
@click.option("--sigma-rel", "sigma_rels", required=True, help="EMA widths, e.g. 0.05,0.10.")
@click.option(
    "--at",
    "at_step",
    type=int,
    default=None,
    help="Training iteration to reconstruct at (one with snapshots) [default: the latest].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder [default: the run folder].",
)
def phema(run_dir: str, sigma_rels: str, at_step: int | None, out_dir: str | None) -> None:
    """Write network-phema-<sigma_rel>.safetensors for each requested EMA width."""
    for path in export_phema(run_dir, parse_sigma_rels(sigma_rels), at_step, out_dir):
        click.echo(str(path))
