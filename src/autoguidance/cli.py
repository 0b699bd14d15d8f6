"""`autoguidance <command>`: a thin shell over the library and the experiments.

Bad input never shows a traceback: `UserInputError` and click's usage errors become one line on stderr
and exit status 2.
"""

from __future__ import annotations

import sys

import click

from .commands import diffusers_generate, generate, info, phema, toy, train
from .commands.evaluate import evaluate as evaluate_command
from .errors import UserInputError


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
    diffusers_generate.generate_diffusers_command,
):
    cli.add_command(_command)
cli.add_command(evaluate_command)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="autoguidance", standalone_mode=False)
    except UserInputError as exc:
        click.echo(f"autoguidance: error: {exc}", err=True)
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
