"""Helpers for tests of the command line: a tiny training command, and running the CLI expecting one line."""

from pathlib import Path

import pytest

from autoguidance.cli import main

TRAIN = ["train", "--dataset", "digits", "--preset", "xxs", "--uncond", "--batch", "8", "--device", "cpu"]
TRAIN += ["--no-progress"]


def fails(argv: list[str], capsys, code: int = 2) -> str:
    """Run the CLI, expect exit `code` with exactly one line on stderr and no traceback; return it."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoguidance: ") and "Traceback" not in err, err
    return err


def no_temp_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    assert not left, left


def commands(run: Path, out: str) -> dict[str, list[str]]:
    net = str(run / "network-final.safetensors")
    return {
        "train": [*TRAIN, "--duration", "16", "--out", out],
        "generate": [
            "generate",
            "--net",
            net,
            "--seeds",
            "0-1",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            out,
        ],
        "phema": ["phema", "--run", str(run), "--sigma-rel", "0.07", "--out", out],
    }
