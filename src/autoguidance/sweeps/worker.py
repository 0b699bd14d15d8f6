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

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError
from .store import ResultStore, _optuna, canonical_key, worker_identity

Evaluate = Callable[[dict[str, Any]], dict[str, Any]]
"""config -> {"metrics": {name: number, ...}, "info": {...}}; the sweep's metric must be among them."""


@dataclass
class SweepResult:
    evaluated: int  # configurations this worker measured
    skipped: int  # already finished when this worker started
    total: int  # configurations in the sweep
    copied: int = 0  # results copied from another study of the store (same configuration)


class _Heartbeat:
    """Record the trial's heartbeat every few seconds while it is being evaluated."""

    def __init__(self, store: ResultStore, trial_id: int):
        self.store, self.trial_id = store, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.store.heartbeat_s):
            try:
                self.store.storage.record_heartbeat(self.trial_id)
            except Exception:  # a momentarily locked database: the next beat will do
                pass

    def __enter__(self):
        self.store.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _states():
    return _optuna().trial.TrialState


def _by_key(study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        if "key" in t.user_attrs:
            out.setdefault(t.user_attrs["key"], []).append(t)
    return out


def enqueue_missing(store: ResultStore, study, configs: Sequence[dict[str, Any]]) -> int:
    """Enqueue each configuration that is neither finished, waiting nor running (after failing the
    trials of dead workers). Returns how many were enqueued."""
    S = _states()
    store.fail_dead_trials(study)
    present = _by_key(study)
    n = 0
    for config in configs:
        key = canonical_key(config)
        live = [t for t in present.get(key, []) if t.state in (S.COMPLETE, S.WAITING, S.RUNNING)]
        if not live:
            study.enqueue_trial({}, user_attrs={"key": key, "config": config})
            n += 1
    return n


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


def _claim(store: ResultStore, study, trial, metric: str, reuse: bool):
    """Take a popped trial: None when it is not ours to measure (a fresh trial because the queue ran
    empty, or a duplicate), (config, metrics) when copied from another study, else its config."""
    S = _states()
    if "key" not in trial.user_attrs:  # another worker emptied the queue between our look and ask
        study.tell(trial, state=S.FAIL)
        return None
    study._storage.set_trial_user_attr(trial._trial_id, "worker", worker_identity())
    if _is_duplicate(study, trial):
        study._storage.set_trial_user_attr(trial._trial_id, "dropped", "duplicate")
        study.tell(trial, state=S.FAIL)
        return None
    config = trial.user_attrs["config"]
    found = store.lookup(trial.user_attrs["key"], metric) if reuse else None
    if found is not None:  # measured by another experiment in this store: copy, do not redo
        study._storage.set_trial_user_attr(trial._trial_id, "metrics", found.metrics)
        study._storage.set_trial_user_attr(trial._trial_id, "info", found.info)
        study.tell(trial, float(found.metrics[metric]))
        return config, found.metrics
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
    S = _states()
    study = store.study(name, direction)
    keys = {canonical_key(c) for c in configs}
    done_before = sum(
        1 for k, ts in _by_key(study).items() if k in keys and any(t.state == S.COMPLETE for t in ts)
    )
    evaluated = copied = 0
    enqueue_missing(store, study, configs)
    while True:
        waiting = [
            t
            for t in study.get_trials(deepcopy=False, states=(S.WAITING,))
            if t.user_attrs.get("key") in keys
        ]
        if not waiting:
            enqueue_missing(store, study, configs)  # configurations of workers that died meanwhile
            by_key = _by_key(study)
            states = [{t.state for t in by_key.get(k, [])} for k in keys]
            if all(S.COMPLETE in s for s in states):
                break
            if not any(S.WAITING in s for s in states):
                if not wait:
                    break
                time.sleep(poll_s)  # others are still running the rest
                continue
        trial = study.ask()
        try:
            config = _claim(store, study, trial, metric, reuse)
        except _optuna().exceptions.UpdateFinishedTrialError:
            continue  # failed meanwhile by another worker that took it for stale: it is enqueued again
        if config is None:
            continue
        if isinstance(config, tuple):  # copied from another study of the store
            copied += 1
            if on_result is not None:
                on_result(*config)
            continue
        try:
            with _Heartbeat(store, trial._trial_id):
                t0 = time.perf_counter()
                result = evaluate(config)
                seconds = time.perf_counter() - t0
        except BaseException:
            study.tell(trial, state=S.FAIL)  # a restart redoes it at once
            raise
        metrics = result.get("metrics", {})
        if metric not in metrics:
            study.tell(trial, state=S.FAIL)
            raise UserInputError(f"metric {metric!r} was not measured; measured: {sorted(metrics)}")
        info = {**result.get("info", {}), "seconds": seconds, "worker": worker_identity()}
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "metrics", metrics)
            study._storage.set_trial_user_attr(trial._trial_id, "info", info)
            study.tell(trial, float(metrics[metric]))
        except _optuna().exceptions.UpdateFinishedTrialError:
            continue  # another worker took us for dead (no heartbeat within the grace period) and redoes it
        evaluated += 1
        if on_result is not None:
            on_result(config, metrics)
    return SweepResult(evaluated=evaluated, skipped=done_before, total=len(keys), copied=copied)
