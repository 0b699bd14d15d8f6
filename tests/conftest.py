"""Shared fixtures."""

import os
import subprocess
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks gain nothing from threads, and on a small shared CPU spin-waiting threads cost
    seconds: modules of many small evaluations opt in with `pytestmark = usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torchrun():
    """launch(nproc, *args): run `torchrun --standalone --nproc_per_node nproc *args` (one thread per
    process, gloo on the CPU) and fail the test, showing the end of stderr, if it does not succeed."""

    def launch(nproc: int, *args: str, timeout: float = 180) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]

    return launch


@pytest.fixture(scope="session")
def postgres_server_url():
    """One throwaway PostgreSQL server for the whole session (see postgres_server.py); skipped where
    PostgreSQL's server programs or the psycopg driver are missing."""
    pytest.importorskip("psycopg")
    from postgres_server import postgres_server, server_programs

    if server_programs() is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh results store: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    from postgres_server import new_database

    return new_database(request.getfixturevalue("postgres_server_url"))


@pytest.fixture
def torchrun_nodes():
    """launch(nodes, *args): run `torchrun --nnodes N --nproc_per_node 1` N times side by side, each a
    "node" joining one c10d rendezvous on 127.0.0.1 (as on N machines), and fail the test, showing the
    end of stderr, unless every node succeeds."""
    import socket

    def launch(nodes: int, *args: str, timeout: float = 300) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", "1"]
        cmd += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "autoguidance"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen([*cmd, *args], env=env, stderr=subprocess.PIPE, text=True) for _ in range(nodes)
        ]
        errors = [p.communicate(timeout=timeout)[1] for p in procs]
        for p, err in zip(procs, errors, strict=True):
            assert p.returncode == 0, err[-3000:]

    return launch
