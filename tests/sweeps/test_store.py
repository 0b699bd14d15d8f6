"""The sweep engine on a synthetic objective: killed and resumed = uninterrupted, two workers split the
work without duplicates, empty grids are refused."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("optuna")

from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.sweeps.store import ResultStore  # noqa: E402
from autoguidance.sweeps.worker import run_sweep  # noqa: E402

CONFIGS = [{"w": w, "ema": e} for w in (1.0, 1.5, 2.0, 2.5, 3.0) for e in (0.05, 0.1)]

WORKER = textwrap.dedent(
    """
    import sys, time
    from autoguidance.sweeps.store import ResultStore
    from autoguidance.sweeps.worker import run_sweep
    configs = [{"w": w, "ema": e} for w in (1.0, 1.5, 2.0, 2.5, 3.0) for e in (0.05, 0.1)]
    delay = float(sys.argv[2])
    def evaluate(c):
        time.sleep(delay)
        return {"metrics": {"fd": (c["w"] - 2.0) ** 2 + 10 * c["ema"], "n": 7}}
    store = ResultStore(sys.argv[1], heartbeat_s=1, grace_s=5)
    run_sweep(store, "s", configs, evaluate, "fd")
    """
)


def objective(c):
    return {"metrics": {"fd": (c["w"] - 2.0) ** 2 + 10 * c["ema"], "n": 7}}


def table(store_path):
    rows = ResultStore(store_path).rows("s")
    return sorted((r.key, r.value, r.metrics["n"]) for r in rows)


def finished(store_path) -> int:
    """Rows of sweep "s" in the store, 0 while it does not exist yet."""
    try:
        return len(ResultStore(store_path).rows("s"))
    except UserInputError:
        return 0  # no file, or the study is not created yet


def start_worker(tmp_path, store_path, delay):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(store_path), str(delay)], env=env)


def test_uninterrupted_sweep_holds_each_configuration_once(store_url):
    store = ResultStore(store_url)
    done = run_sweep(store, "s", CONFIGS, objective, "fd")
    assert (done.evaluated, done.skipped, done.total) == (10, 0, 10)
    assert len(table(store_url)) == 10
    again = run_sweep(store, "s", CONFIGS, objective, "fd")  # nothing left: nothing redone
    assert (again.evaluated, again.skipped) == (0, 10)
    assert len(store.rows("s")) == 10


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path, store_url):
    reference = ResultStore(tmp_path / "ref.db")
    run_sweep(reference, "s", CONFIGS, objective, "fd")
    path = store_url
    proc = start_worker(tmp_path, path, delay=0.5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if finished(path) >= 3:
            break
    proc.send_signal(signal.SIGKILL)  # midway, most likely inside an evaluation
    proc.wait()
    partial = table(path)
    assert 3 <= len(partial) < 10
    # The killed worker's unfinished configuration is redone at once: its process is gone (same host).
    resumed = run_sweep(ResultStore(path, heartbeat_s=1, grace_s=60), "s", CONFIGS, objective, "fd")
    assert resumed.skipped == len(partial) and resumed.evaluated == 10 - len(partial)
    assert table(path) == table(tmp_path / "ref.db")


@pytest.mark.slow
def test_two_workers_share_a_store_without_duplicates(tmp_path, store_url):
    path = store_url
    ResultStore(path).study("s")  # create the schema once, before the two workers race for it
    workers = [start_worker(tmp_path, path, delay=0.3) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=180) == 0
    rows = ResultStore(path).rows("s")
    assert len(rows) == 10 and len({r.key for r in rows}) == 10
    assert len({r.info["worker"]["pid"] for r in rows}) == 2  # both did some of the work
    reference = ResultStore(tmp_path / "ref.db")
    run_sweep(reference, "s", CONFIGS, objective, "fd")
    assert table(path) == table(tmp_path / "ref.db")


@pytest.mark.parametrize(
    "error",
    [
        "(sqlite3.OperationalError) table trial_params already exists",
        "(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num",
    ],
)
def test_a_worker_that_loses_the_race_to_create_the_tables_retries(tmp_path, monkeypatch, error):
    # Two workers started together on a new SQLite store both try to create its tables; the loser's
    # "table ... already exists" or duplicate schema version row must not end it (both seen here).
    import optuna

    real, calls = optuna.storages.RDBStorage, []

    class Racing(real):  # a subclass: optuna checks isinstance(storage, RDBStorage)
        def __init__(self, *args, **kwargs):
            calls.append(1)
            super().__init__(*args, **kwargs)
            if len(calls) == 1:  # the other worker won: the tables exist, this one failed creating them
                raise RuntimeError(error)

    class Broken(real):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("file is not a database")

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    store = ResultStore(tmp_path / "race.db")
    assert len(calls) == 2 and store.study_names() == []
    monkeypatch.setattr(optuna.storages, "RDBStorage", Broken)
    with pytest.raises(UserInputError, match="cannot open results store"):
        ResultStore(tmp_path / "other.db")


def test_empty_grid_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="no configurations"):
        run_sweep(ResultStore(tmp_path / "e.db"), "s", [], objective, "fd")


def test_store_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="folder"):
        ResultStore(tmp_path)


def test_configuration_measured_by_another_study_is_copied_not_redone(tmp_path):
    store = ResultStore(tmp_path / "x.db")
    run_sweep(store, "first", CONFIGS[:3], objective, "fd")
    calls = []

    def counting(c):
        calls.append(c)
        return objective(c)

    done = run_sweep(store, "second", CONFIGS[:5], counting, "fd")
    assert (done.evaluated, done.copied) == (2, 3) and len(calls) == 2  # three copied from "first"
    rows = {r.key: r for r in store.rows("second")}
    assert sum(r.info.get("copied_from") == "first" for r in rows.values()) == 3
    assert sorted(r.value for r in rows.values()) == sorted(
        objective(c)["metrics"]["fd"] for c in CONFIGS[:5]
    )


@pytest.mark.slow
def test_three_workers_one_killed_again_and_again_end_with_the_rows_of_one(tmp_path, store_url):
    # Three workers share one store; one of them is killed at random moments and restarted, five times
    # over. The sweep ends with every configuration once and the values of one uninterrupted worker.
    reference = ResultStore(tmp_path / "ref.db")
    run_sweep(reference, "s", CONFIGS, objective, "fd")
    ResultStore(store_url).study("s")  # the schema once, before the workers race for it
    steady = [start_worker(tmp_path, store_url, delay=0.4) for _ in range(2)]
    rng = random.Random(0)
    kills = 0
    while kills < 5 and finished(store_url) < len(CONFIGS) - 2:
        victim = start_worker(tmp_path, store_url, delay=0.4)
        time.sleep(rng.uniform(0.3, 2.0))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
    for w in steady:
        assert w.wait(timeout=300) == 0
    rows = ResultStore(store_url).rows("s")
    assert kills >= 3 and len(rows) == len(CONFIGS) and len({r.key for r in rows}) == len(CONFIGS)
    assert table(store_url) == table(tmp_path / "ref.db")
