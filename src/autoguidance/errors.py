"""The exception types the library raises for problems a user can act on, and the integer check that
configs share.

The library only raises; the CLI alone turns these into exit codes (cli.py): `UserInputError` and its
subclasses exit with status 2 (bad input, bad or full output location), `RunFailedError` with status 1
(the input was fine but the computation failed, e.g. a training run whose loss diverged). Every message
is a single line that names the problem, printed without a traceback.
"""

from typing import Any


class UserInputError(ValueError):
    """Bad input from the user: a corrupt or mismatched checkpoint, a bad weight, a bad seed range."""


class OutputPathError(UserInputError):
    """An output location that cannot be written: a file where a folder is needed, no permission, an
    impossible path, or a disk that filled up while writing. Raised before expensive work where possible."""


class RunFailedError(RuntimeError):
    """A genuine failure of the computation (not of its input), e.g. a non-finite training loss."""


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """UserInputError unless `value` is an int (not a bool) in [minimum, maximum]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise UserInputError(f"{name} must be an integer {bound}, got {value!r}")
