"""The restricted unpickler refuses pickles that would run code and reads EDM2's reference statistics."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from autoguidance import safe_pickle
from autoguidance.errors import UserInputError
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
    with pytest.raises(safe_pickle.RefusedPickleError) as exc:
        safe_pickle.load(path)
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
    loaded = safe_pickle.load(path)
    assert np.array_equal(loaded["fid"]["mu"], stats["fid"]["mu"])
    ref = load_reference(path, "dinov2")
    assert ref.mu.dtype == np.float64 and np.allclose(ref.mu, stats["fd_dinov2"]["mu"])
    assert ref.sigma.shape == (1024, 1024) and ref.resolution is None
    with pytest.raises(UserInputError, match="classifier"):
        load_reference(path, "classifier")


def test_plain_containers_and_scalars():
    data = {"a": [1, 2.5, (3, "x")], "b": collections.OrderedDict(c={1, 2}), "n": np.float32(2), "z": 1j}
    assert safe_pickle.loads(pickle.dumps(data, protocol=2)) == data


def test_larger_allowlist_and_substitutes():
    data = pickle.dumps(collections.Counter("aab"))
    with pytest.raises(safe_pickle.RefusedPickleError, match="collections.Counter"):
        safe_pickle.loads(data)
    allowed = safe_pickle.STATS_GLOBALS | {("collections", "Counter")}
    assert safe_pickle.loads(data, allowed) == collections.Counter("aab")
    # A mapping hands out a stand-in without importing what the pickle names.
    assert safe_pickle.loads(data, {("collections", "Counter"): dict}) == {"a": 2, "b": 1}


def test_malformed_pickle_is_one_line(tmp_path):
    with pytest.raises(safe_pickle.RefusedPickleError, match="cannot read"):
        safe_pickle.loads(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(UserInputError, match="cannot read"):
        safe_pickle.load(tmp_path / "missing.pkl")
