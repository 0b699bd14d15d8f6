"""`python -m autoguidance.cli ...`: the same as `python -m autoguidance ...` (torchrun command lines)."""

from . import main

main()
