"""A worker killed between any two statements of the claim / evaluate / record path never hangs a sweep:
the same command run again finishes, within the grace period, with exactly the rows of an uninterrupted
sweep (each configuration once, the same values)."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

optuna = pytest.importorskip("optuna")

from autoguidance.sweeps.store import ResultStore  # noqa: E402
from autoguidance.sweeps.worker import FAILPOINTS, run_sweep  # noqa: E402

GRACE_S = 3.0
CONFIGS = [{"kind": "autoguidance", "w": w, "main_ema": e} for w in (1.5, 2.0, 2.5) for e in (0.05, 0.1)]

WORKER = textwrap.dedent(
    f"""
    import sys
    from autoguidance.sweeps.store import ResultStore
    from autoguidance.sweeps.worker import run_sweep
    configs = {CONFIGS!r}
    def evaluate(c):
        return {{"metrics": {{"fd": (c["w"] - 2.0) ** 2 + 10 * c["main_ema"]}}}}
    store = ResultStore(sys.argv[1], heartbeat_s=0.5, grace_s={GRACE_S})
    run_sweep(store, "s", configs, evaluate, "fd", poll_s=0.25)
    """
)


def objective(c):
    return {"metrics": {"fd": (c["w"] - 2.0) ** 2 + 10 * c["main_ema"]}}


def rows(path):
    """(key, value) of every finished configuration, and how many finished trials each key has."""
    store = ResultStore(path)
    study = optuna.load_study(study_name="s", storage=store.storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    counts = {}
    for t in complete:
        counts[t.user_attrs["key"]] = counts.get(t.user_attrs["key"], 0) + 1
    return sorted((r.key, r.value) for r in store.rows("s")), counts


def worker(tmp_path, path, failpoint=None, timeout=120):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k != "AUTOGUIDANCE_FAILPOINT"}
    env["OMP_NUM_THREADS"] = "1"
    if failpoint:
        env["AUTOGUIDANCE_FAILPOINT"] = failpoint
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(path)], env=env, timeout=timeout)
    return done.returncode, time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_death_at_every_point_of_the_path_costs_at_most_the_grace_period(tmp_path, request, backend):
    def fresh_store(name):
        if backend == "sqlite":
            return tmp_path / f"{name}.db"
        from postgres_server import new_database

        return new_database(request.getfixturevalue("postgres_server_url"))

    reference = tmp_path / "reference.db"
    run_sweep(ResultStore(reference), "s", CONFIGS, objective, "fd")
    want, _ = rows(reference)
    assert len(want) == len(CONFIGS)
    kills = 0
    occurrences = (1, 2, 4) if backend == "sqlite" else (2,)  # the server's run: every point once
    for point in FAILPOINTS:
        for occurrence in occurrences:
            path = fresh_store(f"{point}-{occurrence}")
            status, _ = worker(tmp_path, path, failpoint=f"{point}:{occurrence}")
            assert status == 86, (point, occurrence, status)  # it died where it was told to
            kills += 1
            status, seconds = worker(tmp_path, path)
            assert status == 0, (point, occurrence)
            got, counts = rows(path)
            assert got == want, (point, occurrence)
            assert set(counts.values()) == {1}, (point, occurrence)  # no configuration twice
            # The rerun waited for a dead trial at most the grace period (plus the start of Python).
            assert seconds < GRACE_S + 20, (point, occurrence, seconds)
    assert kills == len(occurrences) * len(FAILPOINTS)


def test_a_trial_without_any_sign_of_life_is_dead_after_the_grace_period(tmp_path):
    # The window the issue found: a trial popped (RUNNING) by a worker killed before it wrote anything.
    store = ResultStore(tmp_path / "s.db", heartbeat_s=1, grace_s=60)
    study = store.study("s")
    study.enqueue_trial({}, user_attrs={"key": "k", "config": {}})
    trial = optuna.load_study(study_name="s", storage=store.storage).ask()  # then the worker "dies"
    frozen = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
    assert frozen.number == trial.number and "worker" not in frozen.user_attrs
    start = frozen.datetime_start.timestamp()
    assert not store.is_dead(frozen, now=start + 59) and store.is_dead(frozen, now=start + 61)
    assert store.fail_dead_trials(study) == 0  # it has not been gone long enough yet
    # A trial whose worker ran on this host in a process that is gone is dead at once.
    store.storage.set_trial_user_attr(
        frozen._trial_id, "worker", {"host": os.uname().nodename, "pid": 2**22 + 7}
    )
    frozen = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
    assert store.is_dead(frozen, now=start + 1)


def test_each_trial_carries_its_varying_fields_as_optuna_parameters(store_url):
    # Optuna's own API (what optuna-dashboard reads) sees w and main_ema as parameters of every trial;
    # fields the same in every configuration (kind) are not parameters; the canonical JSON stays the key.
    path = store_url
    run_sweep(ResultStore(path), "s", CONFIGS, objective, "fd")
    study = optuna.load_study(study_name="s", storage=ResultStore(path).storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == len(CONFIGS)
    for t in trials:
        config = t.user_attrs["config"]
        assert t.params == {"w": config["w"], "main_ema": config["main_ema"]}
        assert t.value == pytest.approx((config["w"] - 2.0) ** 2 + 10 * config["main_ema"])
    frame = study.trials_dataframe()
    assert {"params_w", "params_main_ema"} <= set(frame.columns)
    importance = optuna.importance.get_param_importances(study)
    assert set(importance) == {"w", "main_ema"}


def _popped_twice(tmp_path):
    """One waiting trial taken by two workers' `ask` at the same moment, as SQLite (no row locks) allows:
    two Trial objects of one RUNNING trial."""
    from autoguidance.sweeps.worker import enqueue_missing

    store = ResultStore(tmp_path / "s.db")
    study = store.study("s")
    enqueue_missing(store, study, CONFIGS[:1])
    first = study.ask()
    second = optuna.trial.Trial(study, first._trial_id)
    return store, study, first, second


def test_a_trial_popped_by_two_workers_is_told_once_and_neither_fails(tmp_path, monkeypatch):
    from autoguidance.sweeps import worker as w

    store, study, a, b = _popped_twice(tmp_path)
    params = w.varying_fields(CONFIGS)
    # Both sign before either looks again: both measure; the second tell finds the trial finished.
    monkeypatch.setattr(w, "worker_identity", lambda: {"host": "h", "pid": 1})
    config_a = w._claim(store, study, a, "fd", False, params)
    monkeypatch.setattr(w, "worker_identity", lambda: {"host": "h", "pid": 2})
    config_b = w._claim(store, study, b, "fd", False, params)
    assert config_a == config_b == CONFIGS[0]
    told_by_b = []

    def b_tells_meanwhile(name):  # b finishes the trial between a's record and a's tell
        if name == "recorded" and not told_by_b:
            told_by_b.append("started")
            told_by_b.append(w._measure(store, study, b, config_b, objective, "fd"))

    monkeypatch.setattr(w, "failpoint", b_tells_meanwhile)
    assert w._measure(store, study, a, config_a, objective, "fd") is None  # optuna refused a's tell
    assert told_by_b == ["started", objective(CONFIGS[0])["metrics"]]
    (row,) = store.rows("s")
    assert row.value == objective(CONFIGS[0])["metrics"]["fd"]


def test_of_two_workers_signing_one_trial_only_the_last_measures_it(tmp_path, monkeypatch):
    from autoguidance.sweeps import worker as w

    store, study, a, b = _popped_twice(tmp_path)
    params = w.varying_fields(CONFIGS)
    claims = {}

    def b_signs_meanwhile(name):  # worker b signs between a's signature and a's second look
        if name == "claimed" and not claims:
            claims["b"] = None
            monkeypatch.setattr(w, "worker_identity", lambda: {"host": "h", "pid": 2})
            claims["b"] = w._claim(store, study, b, "fd", False, params)

    monkeypatch.setattr(w, "failpoint", b_signs_meanwhile)
    monkeypatch.setattr(w, "worker_identity", lambda: {"host": "h", "pid": 1})
    assert w._claim(store, study, a, "fd", False, params) is None  # a leaves it to b
    assert claims["b"] == CONFIGS[0]
    assert study.get_trials()[0].user_attrs["worker"] == {"host": "h", "pid": 2}
