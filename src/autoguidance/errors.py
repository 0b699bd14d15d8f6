"""The one exception type that the CLI turns into a one-line message and exit status 2."""


class UserInputError(ValueError):
    """Bad input from the user: a corrupt or mismatched checkpoint, a bad weight, a bad seed range.

    Its message is a single line that names the problem; the CLI prints it without a traceback.
    """
