"""The sampler's options are used and recorded by generate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from autoguidance.cli import main
from cli_helpers import commands, fails

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sampler_options_are_used_and_recorded(run, tmp_path, capsys):
    base = commands(run, str(tmp_path / "a"))["generate"]
    main([*base, "--solver", "euler", "--churn", "2", "--s-tmax", "10", "--sigma-max", "20", "--rho", "5"])
    sampler = json.loads((tmp_path / "a" / "generate.json").read_text())["settings"]["sampler"]
    assert sampler == {
        "steps": 2,
        "sigma_min": 0.002,
        "sigma_max": 20.0,
        "rho": 5.0,
        "solver": "euler",
        "churn": 2.0,
        "s_tmin": 0.0,
        "s_tmax": 10.0,
        "s_noise": 1.0,
    }
    main(commands(run, str(tmp_path / "b"))["generate"])
    a, b = (np.asarray(Image.open(tmp_path / d / "seed000000.png")) for d in ("a", "b"))
    assert not np.array_equal(a, b)  # the settings reach the sampler
    err = fails([*commands(run, str(tmp_path / "c"))["generate"], "--sigma-min", "0"], capsys)
    assert "--sigma-min" in err
    assert not (tmp_path / "c").exists()
