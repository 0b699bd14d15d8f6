"""Tuning on a synthetic objective with a known optimum and sample-count noise: adaptive search with
early stopping finds the optimum with far fewer full-count evaluations than a grid."""

import math

import numpy as np
import pytest

pytest.importorskip("optuna")

from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.sweeps.store import ResultStore  # noqa: E402
from autoguidance.sweeps.tune import Range, run_tune, rungs  # noqa: E402

OPT = {"w": 2.2, "ema_main": 0.07, "ema_guide": 0.125}


def synthetic(config, n):
    """A Frechet-distance-like metric: a bowl around OPT, plus a bias and noise that shrink as 1/n
    and 1/sqrt(n). The noise is a fixed function of (config, n): common random numbers."""
    bowl = (
        (config["w"] - OPT["w"]) ** 2
        + 4 * math.log(config["ema_main"] / OPT["ema_main"]) ** 2
        + 2 * math.log(config["ema_guide"] / OPT["ema_guide"]) ** 2
    )
    rng = np.random.default_rng(int(1e6 * config["w"]) % 2**31)
    return {"metrics": {"fd": 1.0 + bowl + 20 / n + 0.3 * rng.standard_normal() / math.sqrt(n)}}


SPACE = {
    "w": Range(1.0, 4.0),
    "ema_main": Range(0.01, 0.25, log=True),
    "ema_guide": Range(0.01, 0.25, log=True),
}


def test_rungs_double_up_to_the_full_count():
    assert rungs(1000, 125) == [125, 250, 500, 1000]
    assert rungs(64, 64) == [64]
    with pytest.raises(UserInputError):
        rungs(10, 20)


@pytest.mark.slow
def test_tune_finds_the_optimum_of_a_synthetic_objective(tmp_path):
    seen = []
    result = run_tune(
        ResultStore(tmp_path / "t.db"),
        "tune",
        {"kind": "autoguidance"},
        SPACE,
        synthetic,
        "fd",
        samples=1024,
        first_samples=64,
        trials=60,
        seed=1,
        on_trial=lambda number, config, n, value: seen.append(n),
    )
    best = result.best_config
    assert abs(best["w"] - OPT["w"]) < 0.3
    assert abs(math.log(best["ema_main"] / OPT["ema_main"])) < 0.3
    assert abs(math.log(best["ema_guide"] / OPT["ema_guide"])) < 0.5
    assert best["kind"] == "autoguidance"
    assert result.best_value < 1.15  # measured at the full count: bowl ~ 0, bias 20 / 1024
    assert result.trials == 60
    # Early stopping: most trials never reach the full count, and the whole search costs fewer full-count
    # evaluations than a 5 x 5 x 5 grid's 125 by far.
    assert result.complete < 30
    assert result.evaluations < 40
    assert seen.count(1024) == result.complete


def test_tune_resumes_to_the_requested_number_of_trials(tmp_path):
    store = ResultStore(tmp_path / "t.db")
    args = ({"kind": "autoguidance"}, SPACE, synthetic, "fd")
    first = run_tune(store, "tune", *args, samples=256, first_samples=64, trials=5, seed=0)
    assert first.trials == 5
    more = run_tune(store, "tune", *args, samples=256, first_samples=64, trials=8, seed=0)
    assert more.trials == 8  # three more, not eight


def test_empty_or_clashing_search_space_is_refused(tmp_path):
    store = ResultStore(tmp_path / "t.db")
    with pytest.raises(UserInputError, match="empty"):
        run_tune(store, "t", {}, {}, synthetic, "fd", samples=64, first_samples=64, trials=1)
    with pytest.raises(UserInputError, match="both fixed and searched"):
        run_tune(store, "t", {"w": 2}, SPACE, synthetic, "fd", samples=64, first_samples=64, trials=1)
