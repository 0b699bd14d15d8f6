"""Tuning: the best (w, EMA_main, EMA_guide) for one metric in far fewer evaluations than a grid.

Adaptive search (Optuna's TPE sampler, multivariate) proposes configurations; each is measured on a
growing prefix of one fixed seed list (common random numbers, so every configuration sees the same
noise and classes), e.g. 1/8, then 1/4, ..., then all of the samples. After each rung the pruner stops a
configuration whose metric is worse than most others' at the same sample count (successive halving), so
poor configurations cost a small sample count only. Comparisons are always between equal sample counts:
a Frechet distance is biased upwards at small counts, equally for all configurations.

The study lives in the results store like a sweep: a killed tuning run continues from its finished
trials, and several workers may tune one study together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError
from .store import ResultStore, _optuna, canonical_key, worker_identity

EvaluateAt = Callable[[dict[str, Any], int], dict[str, Any]]
"""(config, number of samples) -> {"metrics": {...}, "info": {...}}: measure on the first n seeds."""


@dataclass(frozen=True)
class Range:
    """A searched parameter: uniform in [lo, hi], or in log space when `log`."""

    lo: float
    hi: float
    log: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise UserInputError(f"a search range needs finite lo < hi, got [{self.lo}, {self.hi}]")
        if self.log and self.lo <= 0:
            raise UserInputError(f"a log-scale search range needs lo > 0, got {self.lo}")


def rungs(full: int, first: int) -> list[int]:
    """Sample counts first, 2 first, 4 first, ... below `full`, then `full` itself."""
    if first < 1 or full < first:
        raise UserInputError(f"need 1 <= first sample count <= full count, got {first} and {full}")
    out = []
    n = first
    while n < full:
        out.append(n)
        n *= 2
    return [*out, full]


@dataclass
class TuneResult:
    best_config: dict[str, Any]
    best_value: float  # at the full sample count
    best_metrics: dict[str, Any]
    trials: int  # finished trials (complete or pruned)
    complete: int  # trials measured at the full count
    evaluations: float  # samples generated over all trials, in units of the full count


def run_tune(
    store: ResultStore,
    name: str,
    base: dict[str, Any],
    space: dict[str, Range],
    evaluate_at: EvaluateAt,
    metric: str,
    *,
    samples: int,
    first_samples: int,
    trials: int,
    direction: str = "minimize",
    seed: int = 0,
    startup_trials: int = 8,
    on_trial: Callable[[int, dict[str, Any], int, float], None] | None = None,
) -> TuneResult:
    """Run (or continue) tuning study `name` until it holds `trials` finished trials; return the best.

    base: the fixed part of every configuration; space: parameter name -> Range (the sampled values are
    merged into base). The pruner compares configurations at the rungs `rungs(samples, first_samples)`.
    on_trial(number, config, n_samples, value) is called after each measurement.
    """
    optuna = _optuna()
    if not space:
        raise UserInputError("nothing to tune: the search space is empty")
    clash = sorted(set(space) & set(base))
    if clash:
        raise UserInputError(f"parameters {clash} are both fixed and searched")
    steps = rungs(samples, first_samples)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials)
    # Successive halving: at each rung keep the best 1/2 of the configurations that reached it.
    # Intermediate values are reported at step = sample count, so its rungs are exactly ours.
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=first_samples, reduction_factor=2)
    study = store.study(name, direction, sampler=sampler, pruner=pruner)
    S = optuna.trial.TrialState
    store.fail_dead_trials(study)

    objective = _objective(store, base, space, steps, evaluate_at, metric, on_trial)
    finished = (S.COMPLETE, S.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done < trials:
        study.optimize(
            objective,
            n_trials=trials - done,
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)],
            catch=(),
        )
    return _best(study, name, steps, samples)


def _objective(store, base, space, steps, evaluate_at, metric, on_trial) -> Callable:
    """The trial function: sample a configuration, measure it rung by rung (the first n seeds, each rung
    extending the previous one), and let the pruner stop it between rungs."""
    optuna = _optuna()

    def objective(trial) -> float:
        params = {k: trial.suggest_float(k, r.lo, r.hi, log=r.log) for k, r in sorted(space.items())}
        config = {**base, **params}
        trial.set_user_attr("key", canonical_key(config))
        trial.set_user_attr("config", config)
        trial.set_user_attr("worker", worker_identity())
        value = math.nan
        for rung, n in enumerate(steps):
            with store.keep_alive(trial.study, trial._trial_id):  # other workers see it is not dead
                result = evaluate_at(config, n)
            metrics = result.get("metrics", {})
            if metric not in metrics:
                raise UserInputError(f"metric {metric!r} was not measured; measured: {sorted(metrics)}")
            value = float(metrics[metric])
            trial.set_user_attr("samples", n)
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("info", result.get("info", {}))
            if on_trial is not None:
                on_trial(trial.number, config, n, value)
            if rung < len(steps) - 1:
                trial.report(value, n)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return value

    return objective


def _best(study, name: str, steps: Sequence[int], samples: int) -> TuneResult:
    S = _optuna().trial.TrialState
    finished = (S.COMPLETE, S.PRUNED)
    complete = study.get_trials(deepcopy=False, states=(S.COMPLETE,))
    if not complete:
        raise UserInputError(f"tuning study {name!r} has no configuration measured at the full count")
    best = study.best_trial
    used = sum(_samples_used(t, steps) for t in study.get_trials(deepcopy=False, states=finished))
    return TuneResult(
        best_config=best.user_attrs["config"],
        best_value=float(best.value),
        best_metrics=best.user_attrs.get("metrics", {}),
        trials=len(study.get_trials(deepcopy=False, states=finished)),
        complete=len(complete),
        evaluations=used / samples,
    )


def _samples_used(trial, steps: Sequence[int]) -> int:
    """Samples a trial generated: the largest rung it reached (the image evaluator extends the previous
    rung's samples with the new seeds only, see `evaluate.ImageEvaluator`)."""
    return int(trial.user_attrs.get("samples", steps[-1]))
