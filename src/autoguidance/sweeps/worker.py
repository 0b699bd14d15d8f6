"""Run a fixed list of configurations against a results store: resumable, shareable by many workers.

Each configuration becomes one enqueued Optuna trial (a WAITING row in the store); a worker pops a waiting
trial (the storage hands each to one worker), evaluates it while sending heartbeats, and records its
metrics. Run the same sweep again after a kill and it takes up exactly what is missing: finished
configurations are never redone, a dead worker's unfinished one is redone once. Any number of workers, on
one machine or many (any SQL database), may run the same sweep at once; they split the work.

Duplicates are ruled out in two places: a configuration is enqueued only when it is neither finished,
waiting nor running; and a worker that pops a configuration which another worker already finished or
started earlier drops its copy (marked FAIL with the reason "duplicate") instead of measuring it twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError
from .configs import KINDS
from .store import ResultStore, _optuna, canonical_key, worker_identity

Evaluate = Callable[[dict[str, Any]], dict[str, Any]]
"""config -> {"metrics": {name: number, ...}, "info": {...}}; the sweep's metric must be among them."""


@dataclass
class SweepResult:
    evaluated: int  # configurations this worker measured
    skipped: int  # already finished when this worker started
    total: int  # configurations in the sweep
    copied: int = 0  # results copied from another study of the store (same configuration)


def failpoint(name: str) -> None:
    """Fault injection for the tests of this module: the process dies on the spot (as under SIGKILL: no
    clean-up, no exception) when $AUTOGUIDANCE_FAILPOINT is NAME:N and this is the N-th time this
    process passes point NAME. Costs one dictionary lookup otherwise."""
    wanted = os.environ.get("AUTOGUIDANCE_FAILPOINT")
    if not wanted:
        return
    target, _, count = wanted.partition(":")
    if target == name:
        _PASSED[name] = _PASSED.get(name, 0) + 1
        if _PASSED[name] == int(count or 1):
            os._exit(86)


_PASSED: dict[str, int] = {}
FAILPOINTS = ("enqueued", "asked", "claimed", "alive", "evaluated", "recorded", "told")


def _states():
    return _optuna().trial.TrialState


def _by_key(study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        if "key" in t.user_attrs:
            out.setdefault(t.user_attrs["key"], []).append(t)
    return out


def varying_fields(configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fields whose values differ between `configs`, as Optuna distributions (numbers: their range;
    `kind`: the configuration kinds), so that each trial carries them as parameters and Optuna's own tools
    (optuna-dashboard: metric against w, parallel coordinates, importance) can plot a sweep."""
    optuna = _optuna()
    out: dict[str, Any] = {}
    names = sorted({k for c in configs for k in c})
    for name in names:
        values = [c.get(name) for c in configs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len({json.dumps(v, sort_keys=True) for v in values}) < 2:
            continue  # the same in every configuration: not a parameter of this sweep
        if name == "kind":
            out[name] = optuna.distributions.CategoricalDistribution(KINDS)
        elif len(numbers) == len(values):
            out[name] = optuna.distributions.FloatDistribution(float(min(numbers)), float(max(numbers)))
    return out


def enqueue_missing(store: ResultStore, study, configs: Sequence[dict[str, Any]]) -> int:
    """Enqueue each configuration that is neither finished, waiting nor running (after failing the
    trials of dead workers), with its varying fields as the trial's parameters. Returns how many were
    enqueued."""
    S = _states()
    store.fail_dead_trials(study)
    present = _by_key(study)
    params = varying_fields(configs)
    n = 0
    for config in configs:
        key = canonical_key(config)
        live = [t for t in present.get(key, []) if t.state in (S.COMPLETE, S.WAITING, S.RUNNING)]
        if not live:
            fixed = {k: config[k] for k in params if k in config}
            study.enqueue_trial(fixed, user_attrs={"key": key, "config": config, "params": sorted(fixed)})
            failpoint("enqueued")
            n += 1
    return n


def _record_params(trial, params: dict[str, Any]) -> None:
    """Set the trial's parameters to its configuration's values (enqueued as fixed parameters)."""
    categorical = _optuna().distributions.CategoricalDistribution
    for name in trial.user_attrs.get("params", []):
        dist = params.get(name)
        if isinstance(dist, categorical):
            trial.suggest_categorical(name, dist.choices)
        elif dist is not None:
            trial.suggest_float(name, dist.low, dist.high)


def _is_duplicate(study, trial) -> bool:
    """True when another trial of the same configuration is finished, or running and started first."""
    S = _states()
    key = trial.user_attrs.get("key")
    mine = study._storage.get_trial(trial._trial_id)
    for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.RUNNING)):
        if t.number == trial.number or t.user_attrs.get("key") != key:
            continue
        if t.state == S.COMPLETE:
            return True
        if (t.datetime_start, t.number) < (mine.datetime_start, mine.number):
            return True
    return False


def _tell(study, trial, value: float | None = None, state=None) -> bool:
    """Finish a trial; False when it was finished already by another worker: one that took this worker
    for dead, or one that popped the same trial (SQLite has no row locks, so two workers' `ask` can take
    one waiting trial at the same moment)."""
    try:
        study.tell(trial, value, state=state)
    except _optuna().exceptions.UpdateFinishedTrialError:
        return False
    except ValueError:  # optuna's "Cannot tell a COMPLETE/FAIL trial"
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            return False
        raise
    return True


def _claim(store: ResultStore, study, trial, metric: str, reuse: bool, params: dict[str, Any]):
    """Take a popped trial: None when it is not ours to measure (a fresh trial because the queue ran
    empty, a duplicate, or one another worker popped at the same moment), (config, metrics) when copied
    from another study, else its config."""
    S = _states()
    if "key" not in trial.user_attrs:  # another worker emptied the queue between our look and ask
        _tell(study, trial, state=S.FAIL)
        return None
    me = worker_identity()
    study._storage.set_trial_user_attr(trial._trial_id, "worker", me)
    failpoint("claimed")
    if study._storage.get_trial(trial._trial_id).user_attrs.get("worker") != me:
        return None  # popped twice: the worker that signed last measures it
    _record_params(trial, params)
    if _is_duplicate(study, trial):
        study._storage.set_trial_user_attr(trial._trial_id, "dropped", "duplicate")
        _tell(study, trial, state=S.FAIL)
        return None
    config = trial.user_attrs["config"]
    found = store.lookup(trial.user_attrs["key"], metric) if reuse else None
    if found is not None:  # measured by another experiment in this store: copy, do not redo
        study._storage.set_trial_user_attr(trial._trial_id, "metrics", found.metrics)
        study._storage.set_trial_user_attr(trial._trial_id, "info", found.info)
        return (config, found.metrics) if _tell(study, trial, float(found.metrics[metric])) else None
    return config


def run_sweep(
    store: ResultStore,
    name: str,
    configs: Sequence[dict[str, Any]],
    evaluate: Evaluate,
    metric: str,
    *,
    direction: str = "minimize",
    wait: bool = True,
    poll_s: float = 2.0,
    on_result: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    reuse: bool = True,
) -> SweepResult:
    """Measure every configuration of sweep `name` not yet in the store; return what this worker did.

    configs: JSON-able dicts (their canonical JSON is their identity). evaluate(config) returns
    {"metrics": {...}, "info": {...}}; the trial's value is metrics[metric]. wait: when nothing is left to
    take but other workers still run configurations, wait for them (and take over any that die) rather
    than return; a sweep run to completion then holds every configuration exactly once. reuse: copy the
    result of a configuration that another study of the store already measured (same canonical key).
    """
    if not configs:
        raise UserInputError(f"sweep {name!r} has no configurations (an empty grid?)")
    study = store.study(name, direction)
    keys = {canonical_key(c) for c in configs}
    params = varying_fields(configs)
    done_before = sum(1 for k, ts in _by_key(study).items() if k in keys and _complete(ts))
    result = SweepResult(evaluated=0, skipped=done_before, total=len(keys))
    enqueue_missing(store, study, configs)
    while _work_left(store, study, configs, keys, wait, poll_s):
        trial = study.ask()
        failpoint("asked")
        try:
            config = _claim(store, study, trial, metric, reuse, params)
        except _optuna().exceptions.UpdateFinishedTrialError:
            continue  # failed meanwhile by another worker that took it for dead: it is enqueued again
        if config is None:
            continue
        if isinstance(config, tuple):  # copied from another study of the store
            result.copied += 1
            if on_result is not None:
                on_result(*config)
            continue
        metrics = _measure(store, study, trial, config, evaluate, metric)
        if metrics is not None:
            result.evaluated += 1
            if on_result is not None:
                on_result(config, metrics)
    return result


def _complete(trials) -> bool:
    return any(t.state == _states().COMPLETE for t in trials)


def _work_left(store: ResultStore, study, configs, keys: set[str], wait: bool, poll_s: float) -> bool:
    """Whether a configuration of this sweep waits in the queue; when none does, enqueue again those of
    workers that died meanwhile, and wait (if asked) while other workers still run the rest."""
    S = _states()
    while True:
        waiting = study.get_trials(deepcopy=False, states=(S.WAITING,))
        if any(t.user_attrs.get("key") in keys for t in waiting):
            return True
        enqueue_missing(store, study, configs)  # configurations of workers that died meanwhile
        by_key = _by_key(study)
        states = [{t.state for t in by_key.get(k, [])} for k in keys]
        if all(S.COMPLETE in s for s in states):
            return False
        if any(S.WAITING in s for s in states):
            return True
        if not wait:
            return False
        time.sleep(poll_s)  # others are still running the rest


def _measure(store: ResultStore, study, trial, config, evaluate: Evaluate, metric: str):
    """Evaluate a claimed configuration while keeping its trial alive, and record it; its metrics, or
    None when another worker finished the trial meanwhile (it took this one for dead and redoes it, or
    it measured the same trial, popped twice, and told it first)."""
    S = _states()
    try:
        with store.keep_alive(study, trial._trial_id):
            failpoint("alive")
            t0 = time.perf_counter()
            result = evaluate(config)
            seconds = time.perf_counter() - t0
            failpoint("evaluated")
    except _optuna().exceptions.UpdateFinishedTrialError:
        return None  # finished by another worker before this one could stamp it alive
    except BaseException:
        _tell(study, trial, state=S.FAIL)  # a restart redoes it at once
        raise
    metrics = result.get("metrics", {})
    if metric not in metrics:
        _tell(study, trial, state=S.FAIL)
        raise UserInputError(f"metric {metric!r} was not measured; measured: {sorted(metrics)}")
    info = {**result.get("info", {}), "seconds": seconds, "worker": worker_identity()}
    try:
        study._storage.set_trial_user_attr(trial._trial_id, "metrics", metrics)
        study._storage.set_trial_user_attr(trial._trial_id, "info", info)
        failpoint("recorded")
        told = _tell(study, trial, float(metrics[metric]))
        failpoint("told")
    except _optuna().exceptions.UpdateFinishedTrialError:
        told = False
    # Not told: another worker took us for dead (no sign of life within the grace period) and redoes it,
    # or measured the same popped trial and told it first.
    return metrics if told else None
