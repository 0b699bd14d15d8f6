"""Atomic writes: a refused location costs nothing; an interrupted write leaves the old file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoguidance.errors import OutputPathError
from autoguidance.io import atomic
from cli_helpers import no_temp_files

pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_dir_refuses_what_it_cannot_write(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputPathError, match="is a file"):
        atomic.check_dir(tmp_path / "f")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        atomic.check_dir(tmp_path / "f" / "a" / "b")
    assert atomic.check_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"old": 1})

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(target, half_then_crash)
    assert json.loads(target.read_text()) == {"old": 1}
    no_temp_files(tmp_path)
