"""The one exception type that the CLI turns into a one-line message and exit status 2, and the integer
check that configs share."""

from typing import Any


class UserInputError(ValueError):
    """Bad input from the user: a corrupt or mismatched checkpoint, a bad weight, a bad seed range.

    Its message is a single line that names the problem; the CLI prints it without a traceback.
    """


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
