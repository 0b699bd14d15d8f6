"""Output paths for every command that writes: a file where a folder goes, an unwritable folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_helpers import commands, fails

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("command", ["train", "generate", "phema"])
def test_out_is_a_file(run, tmp_path, capsys, command):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    err = fails(commands(run, str(blocker))[command], capsys)
    assert "--out" in err and "is a file" in err
    assert blocker.read_text() == "a file"
    # Below a file: the folder cannot be created at all.
    err = fails(commands(run, str(blocker / "sub"))[command], capsys)
    assert "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def _permissions_bind() -> bool:
    """False for a user whom file modes do not stop (root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o500)
        try:
            Path(d, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o700)
        return False


@pytest.mark.skipif(not _permissions_bind(), reason="this user (root) writes into read-only folders")
@pytest.mark.parametrize("command", ["train", "generate", "phema"])
def test_out_is_unwritable(run, tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for out in (locked, locked / "sub"):
            err = fails(commands(run, str(out))[command], capsys)
            assert "permission" in err and "--out" in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
