"""The results store: Optuna studies in a SQL database, one study per sweep or tuning run.

Why Optuna (and not a home-made table): its RDB storage keeps every trial durably in SQLite (a file, the
default) or any SQL database that SQLAlchemy reaches (PostgreSQL, MySQL: many workers on many machines);
its queue of enqueued trials hands each waiting trial to exactly one worker; and the same studies serve
the adaptive samplers and pruners of `tune` and open in `optuna-dashboard`.

A killed worker leaves its trial RUNNING. A worker shows it is alive by refreshing the trial's "alive"
user attribute (a time stamp) every heartbeat_s seconds (`keep_alive`); any worker takes a RUNNING trial
for dead, marks it FAIL and so has it redone, when the trial shows no sign of life (its "alive" stamp, or
its start if it never got one) for grace_s seconds, or at once when its worker ran on this host and that
process is gone. A worker killed between any two statements, even before it could write anything into
the trial, therefore holds up a sweep for at most grace_s seconds.

A store row is one COMPLETE trial: its configuration (user attribute "config", with its canonical "key"),
its value (the sweep's chosen metric) and every measured metric (user attribute "metrics"). Everything a
report or plot needs is read back from these rows alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
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
    """Studies in one database. heartbeat_s / grace_s: a RUNNING trial that has shown no sign of life
    for grace_s seconds is taken as dead and its configuration redone (a worker on the same host whose
    process is gone is known dead at once)."""

    def __init__(self, store: str | os.PathLike, *, heartbeat_s: float = 20, grace_s: float = 90):
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
                    # Optuna's own heartbeats for `tune`'s Study.optimize (sweeps use `keep_alive`).
                    heartbeat_interval=max(1, int(heartbeat_s)),
                    grace_period=max(2, int(grace_s)),
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
        self.heartbeat_s, self.grace_s = float(heartbeat_s), float(grace_s)

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

    @contextlib.contextmanager
    def keep_alive(self, study, trial_id: int) -> Iterator[None]:
        """Refresh the trial's "alive" stamp now and every heartbeat_s seconds while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    study._storage.set_trial_user_attr(trial_id, "alive", time.time())
                except Exception:  # a momentarily locked database, or the trial failed meanwhile
                    pass

        study._storage.set_trial_user_attr(trial_id, "alive", time.time())
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def is_dead(self, trial, now: float | None = None) -> bool:
        """Whether a RUNNING trial's worker is gone: its process on this host no longer exists, or the trial
        has shown no sign of life (its "alive" stamp, or its start) for more than grace_s seconds."""
        now = time.time() if now is None else now
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") == socket.gethostname() and worker.get("pid"):
            if not _pid_alive(int(worker["pid"])):
                return True
        signs = [trial.user_attrs.get("alive")]
        if trial.datetime_start is not None:
            signs.append(trial.datetime_start.timestamp())
        last = max((float(t) for t in signs if t is not None), default=None)
        return last is not None and now - last > self.grace_s

    def fail_dead_trials(self, study) -> int:
        """Mark the RUNNING trials of dead workers (`is_dead`) FAIL, so that their configurations are
        enqueued and measured again. Returns how many were failed."""
        optuna = _optuna()
        failed = 0
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if not self.is_dead(t):
                continue
            try:
                self.storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
                failed += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first
        return failed
