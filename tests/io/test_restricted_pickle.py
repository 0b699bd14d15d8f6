"""The restricted unpickler refuses pickles that would run code and reads EDM2's reference statistics
(the same unpickler reads EDM2's network files: tests/test_edm2_fixture.py)."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from autoguidance.errors import UserInputError
from autoguidance.io import restricted_pickle
from autoguidance.metrics.reference import load_reference


class _RunsCode:
    """Unpickling this calls os.system: what a malicious pickle does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"fid": _RunsCode(marker)}))
    with pytest.raises(restricted_pickle.RefusedPickleError) as exc:
        restricted_pickle.load(path)
    assert "system" in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, UserInputError)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: the plain unpickler does run it
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_loads_edm2_reference_layout(tmp_path, protocol):
    rng = np.random.default_rng(0)
    stats = {
        "fid": {"mu": rng.normal(size=2048), "sigma": np.eye(2048) * 2.0},
        "fd_dinov2": {"mu": rng.normal(size=1024).astype(np.float32), "sigma": np.eye(1024)},
    }
    path = tmp_path / "ref.pkl"
    path.write_bytes(pickle.dumps(stats, protocol=protocol))
    loaded = restricted_pickle.to_plain(restricted_pickle.load(path))
    assert np.array_equal(loaded["fid"]["mu"], stats["fid"]["mu"])
    ref = load_reference(path, "dinov2")
    assert ref.mu.dtype == np.float64 and np.allclose(ref.mu, stats["fd_dinov2"]["mu"])
    assert ref.sigma.shape == (1024, 1024) and ref.resolution is None
    with pytest.raises(UserInputError, match="classifier"):
        load_reference(path, "classifier")


def test_plain_containers_and_scalars():
    data = {"a": [1, 2.5, (3, "x")], "b": collections.OrderedDict(c={1, 2}), "n": np.float32(2), "z": 1j}
    assert restricted_pickle.to_plain(restricted_pickle.loads(pickle.dumps(data, protocol=2))) == data


def test_other_globals_are_refused_not_imported():
    data = pickle.dumps(collections.Counter("aab"))
    with pytest.raises(restricted_pickle.RefusedPickleError, match="collections.Counter"):
        restricted_pickle.loads(data)


def test_malformed_pickle_is_one_line(tmp_path):
    with pytest.raises(restricted_pickle.RefusedPickleError, match="cannot read"):
        restricted_pickle.loads(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(UserInputError, match="cannot read"):
        restricted_pickle.load(tmp_path / "missing.pkl")
