"""`python -m autoguidance.cli ...`: the same as `python -m autoguidance ...` (kept for torchrun command lines)."""

from . import main

main()
