"""`autoguidance <command>`: a thin shell over the library and the experiments.

The library raises typed exceptions; only this module turns them into exit statuses, each with one line
on stderr and no traceback: bad input (`UserInputError`, click's usage errors) and output locations that
cannot be written (`OutputPathError`, an OSError while writing) exit 2; a run that failed on good input
(`RunFailedError`, e.g. a diverging loss) exits 1; an interrupt exits 130.
"""

from __future__ import annotations

import sys

import click

from ..errors import RunFailedError, UserInputError
from ..io.atomic import output_error
from . import convert, experiment, generate, generate_diffusers, info, phema, sweep, toy, train, tune
from .evaluate import evaluate as evaluate_command
from .generate_text import generate_text as generate_text_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autoguidance")
def cli() -> None:
    """Guide a diffusion model with a bad version of itself (Karras et al., NeurIPS 2024)."""


for _command in (
    toy.toy,
    toy.toy_plot,
    train.train,
    phema.phema,
    generate.generate,
    info.info,
    convert.convert,
    sweep.sweep,
    tune.tune,
    experiment.experiment,
    generate_diffusers.generate_diffusers_command,
    generate_text_command,
):
    cli.add_command(_command)
cli.add_command(toy.toy_sweep)
cli.add_command(evaluate_command)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="autoguidance", standalone_mode=False)
    except UserInputError as exc:
        click.echo(f"autoguidance: error: {exc}", err=True)
        sys.exit(2)
    except RunFailedError as exc:
        click.echo(f"autoguidance: failed: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a write outside `atomic` (an appended log): a full disk, a lost permission
        if exc.filename is None:
            raise
        click.echo(f"autoguidance: error: {output_error(exc.filename, exc)}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        click.echo(f"autoguidance: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"autoguidance: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("autoguidance: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("autoguidance: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
