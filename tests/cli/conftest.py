"""Fixtures of the command-line tests."""

from pathlib import Path

import pytest

from autoguidance.cli import main
from cli_helpers import TRAIN


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run (2 iterations of batch 8 on digits): networks and snapshots to read."""
    out = tmp_path_factory.mktemp("run") / "run"
    main([*TRAIN, "--duration", "16", "--out", str(out)])
    return out
