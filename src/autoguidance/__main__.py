"""`python -m autoguidance ...` (also what torchrun launches with `-m autoguidance`)."""

from .cli import main

main()
