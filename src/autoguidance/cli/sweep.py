"""`autoguidance sweep FILE --store DB`: measure every configuration of a sweep file, resumably.

Run it again after an interruption and it continues; run it on several processes or machines against one
store (any SQL database URL) and they split the work. Under torchrun each configuration's seeds are
sharded over the processes.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserInputError
from ..io import atomic
from ..sweeps.configs import read_sweep_file
from ..sweeps.plan import Group, Plan
from ..sweeps.report import write_report
from ..sweeps.store import ResultStore
from .options import check_store, metric_source_options
from .session import progress_default, run_plan_everywhere


def sweep_plan(spec: dict) -> Plan:
    """A sweep file as a plan: one group (curve) per guidance kind, against w."""
    groups: dict[str, list] = {}
    for c in spec["configs"]:
        groups.setdefault(c["kind"], []).append(c)
    return Plan(
        spec["name"],
        spec["metric"],
        [Group(k, "main_ema" if k == "none" else "w", cs) for k, cs in groups.items()],
    )


@click.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--store", "store_path", required=True, help="Results store: a SQLite file or a database URL.")
@click.option(
    "--cache",
    "cache_dir",
    default=None,
    help="Folder for reconstructed networks [default: beside the store].",
)
@click.option("--metrics", "extra", default="", help="Further metrics to record, e.g. pr_classifier,classes.")
@metric_source_options
@click.option("--batch", type=int, default=64, show_default=True, help="Images per generated batch.")
@click.option(
    "--report", "report_dir", default=None, help="Also write the JSON, markdown and PNG report here."
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait for other workers' configurations."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def sweep(sweep_file, store_path, cache_dir, extra, sources, batch, report_dir, wait, device, progress):
    """Measure the configurations of SWEEP_FILE (JSON: name, metric, fixed, grid) into the store."""
    spec = read_sweep_file(sweep_file)
    if batch < 1:
        raise UserInputError(f"--batch must be >= 1, got {batch}")
    check_store(store_path)
    for folder, flag in ((cache_dir, "--cache"), (report_dir, "--report")):
        if folder:
            atomic.check_dir(folder, flag)
    metrics = [spec["metric"], *[m.strip() for m in extra.split(",") if m.strip()]]
    plan = sweep_plan(spec)
    cache = Path(cache_dir) if cache_dir else Path(store_path).expanduser().resolve().parent / "cache"
    done = run_plan_everywhere(
        plan, store_path, cache, metrics, sources, device, batch, wait, progress_default(progress)
    )
    if done is not None and report_dir:
        write_report(ResultStore(store_path), plan.name, report_dir)
        click.echo(f"report in {report_dir}")
