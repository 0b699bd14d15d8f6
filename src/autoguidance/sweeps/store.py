"""The results store: Optuna studies in a SQL database, one study per sweep or tuning run.

Why Optuna (and not a home-made table): its RDB storage keeps every trial durably in SQLite (a file, the
default) or any SQL database that SQLAlchemy reaches (PostgreSQL, MySQL: many workers on many machines);
its queue of enqueued trials hands each waiting trial to exactly one worker; heartbeats tell a killed
worker's trial from a live one; and the same studies serve the adaptive samplers and pruners of `tune`.

A store row is one COMPLETE trial: its configuration (user attribute "config", with its canonical "key"),
its value (the sweep's chosen metric) and every measured metric (user attribute "metrics"). Everything a
report or plot needs is read back from these rows alone.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserInputError


def _optuna():
    try:
        import optuna
    except ImportError:  # an optional extra
        raise UserInputError("sweeps and tuning need Optuna: pip install 'autoguidance[sweeps]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats outside Study.optimize and fail_stale_trials are marked experimental; to a user of a
    # sweep the warnings are noise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def storage_url(store: str | os.PathLike) -> str:
    """A SQLAlchemy URL for `store`: a URL is kept as it is, a file path becomes sqlite:///ABSPATH."""
    text = str(store)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        raise UserInputError(f"store {text} is a folder: give a file name such as {text}/results.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def canonical_key(config: dict[str, Any]) -> str:
    """The configuration as canonical JSON (sorted keys, no spaces): its identity in the store."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@dataclass(frozen=True)
class Row:
    """One finished configuration: what was run and what it measured."""

    key: str
    config: dict[str, Any]
    value: float
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # wall time, worker, resolved model files


RACES = ("already exists", "UNIQUE constraint failed: alembic_version")


class ResultStore:
    """Studies in one database. heartbeat_s / grace_s: a RUNNING trial whose worker has not reported for
    grace_s seconds is taken as dead and its configuration redone (a worker on the same host whose
    process is gone is known dead at once)."""

    def __init__(self, store: str | os.PathLike, *, heartbeat_s: int = 20, grace_s: int = 90):
        optuna = _optuna()
        self.url = storage_url(store)
        engine_kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            # Several processes share one SQLite file: wait for its lock rather than fail at once.
            engine_kwargs = {"connect_args": {"timeout": 120}}
        for attempt in range(6):
            try:
                self.storage = optuna.storages.RDBStorage(
                    self.url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=int(heartbeat_s),
                    grace_period=int(grace_s),
                )
                break
            except Exception as exc:  # SQLAlchemy's errors: a bad URL, an unreachable server, a corrupt file
                # Workers started together on a new store race to create its tables and record its
                # schema version; the loser sees "table ... already exists" or a duplicate
                # alembic_version row, and finds the schema complete when it tries again.
                if any(race in str(exc) for race in RACES) and attempt < 5:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise UserInputError(
                    f"cannot open results store {store}: {str(exc).splitlines()[0]}"
                ) from None
        self.heartbeat_s = int(heartbeat_s)

    def study(self, name: str, direction: str = "minimize", sampler=None, pruner=None):
        """Create or load the study `name` (its direction must not change between runs)."""
        optuna = _optuna()
        study = optuna.create_study(
            storage=self.storage,
            study_name=name,
            direction=direction,
            load_if_exists=True,
            sampler=sampler,
            pruner=pruner,
        )
        if study.direction.name.lower() != direction:
            raise UserInputError(
                f"study {name!r} in {self.url} was created to {study.direction.name.lower()} its metric, "
                f"not to {direction}: use another name"
            )
        return study

    def study_names(self) -> list[str]:
        optuna = _optuna()
        return [s.study_name for s in optuna.get_all_study_summaries(self.storage)]

    def has_study(self, name: str) -> bool:
        return name in self.study_names()

    def rows(self, name: str) -> list[Row]:
        """The finished configurations of study `name`, in the order they were started."""
        optuna = _optuna()
        if not self.has_study(name):
            raise UserInputError(f"no study {name!r} in {self.url}; it holds {self.study_names() or 'none'}")
        study = optuna.load_study(study_name=name, storage=self.storage)
        out = []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            attrs = t.user_attrs
            if "key" not in attrs:
                continue
            out.append(
                Row(
                    key=attrs["key"],
                    config=attrs["config"],
                    value=float(t.value),
                    metrics=dict(attrs.get("metrics", {})),
                    info=dict(attrs.get("info", {})),
                )
            )
        return out

    def lookup(self, key: str, metric: str) -> Row | None:
        """A finished row of the same configuration in any study of this store that measured `metric`:
        a configuration shared by two experiments (same models, w, seeds, steps) is measured once."""
        optuna = _optuna()
        for summary in optuna.get_all_study_summaries(self.storage):
            study = optuna.load_study(study_name=summary.study_name, storage=self.storage)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                if t.user_attrs.get("key") == key and metric in t.user_attrs.get("metrics", {}):
                    a = t.user_attrs
                    info = {**a.get("info", {}), "copied_from": summary.study_name}
                    return Row(
                        key=key, config=a["config"], value=float(t.value), metrics=a["metrics"], info=info
                    )
        return None

    def fail_dead_trials(self, study) -> int:
        """Mark RUNNING trials of dead workers FAIL: heartbeat older than the grace period, or a worker
        process on this host that no longer exists. Returns how many were failed."""
        optuna = _optuna()
        before = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        optuna.storages.fail_stale_trials(study)
        here = socket.gethostname()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker") or {}
            if worker.get("host") == here and worker.get("pid") and not _pid_alive(int(worker["pid"])):
                try:
                    self.storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # another worker got there first
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))) - before
