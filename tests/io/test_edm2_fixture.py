"""EDM2 network files as EDM2's own code writes them: the fixture written by EDM2's training code
(`../shared/fixtures/`, see its README) loads, reproduces the reference outputs, survives the command
line end to end, and hostile variants of it are refused in one line before anything runs or is allocated.

The fixture is read where it lies (beside the checkout, or $AUTOGUIDANCE_FIXTURES); its bytes are never
copied into the repository (they embed EDM2's source code, under a non-commercial licence).
"""

import builtins
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoguidance.cli import main as cli_main
from autoguidance.errors import UserInputError
from autoguidance.io.edm2 import load_edm2_pickle
from autoguidance.io.networks import load_network
from autoguidance.io.restricted_pickle import PersistentRecord, loads
from edm2_writer import (
    _kwargs,
    edm2_pickle_bytes,
    globals_named,
    replace_global,
    storage_header,
    structure,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("AUTOGUIDANCE_FIXTURES", REPO.parent / "shared" / "fixtures"))
PKL = FIXTURES / "edm2-reference-format-16px.pkl"
NPZ = FIXTURES / "edm2-reference-format-16px-outputs.npz"

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not PKL.is_file(), reason=f"EDM2 fixture not found at {PKL}"),
]


def _run(*args):
    """(exit status, stderr) of the CLI in a subprocess, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "autoguidance", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    return done.returncode, done.stderr


def test_fixture_reproduces_the_reference_outputs():
    net = load_edm2_pickle(str(PKL)).net
    ref = np.load(NPZ)
    labels = torch.from_numpy(ref["labels"])
    with torch.no_grad():
        d, logvar = net(
            torch.from_numpy(ref["x"]), torch.from_numpy(ref["sigma"]), labels, return_logvar=True
        )
    for got, want in ((d, ref["D"]), (logvar, ref["logvar"])):
        want = torch.from_numpy(want)
        assert got.dtype == torch.float32 and got.shape == want.shape
        # 1e-5 relative to the tensor's scale (elementwise relative error is meaningless near zero).
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_snapshot_entries_stay_inert_records(capsys):
    ckpt = load_edm2_pickle(str(PKL))
    loss = ckpt.extras["loss_fn"]
    assert isinstance(loss, PersistentRecord) and loss.class_name == "EDM2Loss"  # nothing constructed
    assert loss.attributes() == {"P_mean": -0.4, "P_std": 1.0, "sigma_data": 0.5}
    assert ckpt.extras["dataset_kwargs"]["class_name"] == "training.dataset.ImageFolderDataset"
    assert ckpt.encoder.kind == "rgb"
    cli_main(["info", str(PKL)])
    out = capsys.readouterr().out
    assert '"class": "EDM2Loss"' in out and '"P_mean": -0.4' in out and '"P_std": 1.0' in out
    assert "img_resolution: 16" in out and "parameters: 2,890,187" in out


def test_writer_matches_the_fixture():
    # The tests' own EDM2 writer, given the fixture's network, writes what EDM2 wrote: the same globals,
    # top-level type and keys, records (classes, constructor arguments, attributes, tensors' dtypes and
    # shapes), torch's storage serialisation, and the same float16 values.
    fixture = PKL.read_bytes()
    net = load_edm2_pickle(str(PKL)).net
    ours = edm2_pickle_bytes(net, _kwargs(net.config))
    assert globals_named(ours) == globals_named(fixture)
    assert structure(ours) == structure(fixture)
    assert storage_header(ours) == storage_header(fixture)
    a, b = loads(fixture)["ema"], loads(ours)["ema"]
    from autoguidance.io.edm2 import flatten_state

    fa, fb = flatten_state(a), flatten_state(b)
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (("torch.storage", "_load_from_bytes"), ("builtins", "eval")),
        (("torch_utils.persistence", "_reconstruct_persistent_obj"), ("os", "system")),
        (("dnnlib.util", "EasyDict"), ("os", "system")),
    ],
)
def test_fixture_with_a_code_global_is_refused(tmp_path, monkeypatch, capsys, old, new):
    path = tmp_path / "evil.pkl"
    path.write_bytes(replace_global(PKL.read_bytes(), old, new))
    assert new in globals_named(path.read_bytes())
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    monkeypatch.setattr(builtins, "eval", lambda *a: called.append(a))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["generate", "--net", str(path), "--seeds", "0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and f"{new[0]}.{new[1]}" in err
    assert not called and not (tmp_path / "o").exists()


def _tensor_pickle(size, stride, offset=0, storage_type="FloatStorage", numel=4, data_numel=None):
    """A small pickle of one tensor record over a storage in torch's legacy serialisation (four small
    pickles, the key list, then the element count and the raw elements), with the fields under test."""

    class Key:  # stands for the storage inside its own pickle: written as a persistent id
        pass

    class StoragePickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Key):
                return ("storage", getattr(torch, storage_type), "0", "cpu", numel, None)
            return None

    raw = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, raw, protocol=2)
    StoragePickler(raw, protocol=2).dump(Key())
    pickle.dump(["0"], raw, protocol=2)
    count = numel if data_numel is None else data_numel
    raw.write(struct.pack("<q", count) + b"\0" * 4 * count)

    class Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (raw.getvalue(),))

    class Tensor:
        def __reduce__(self):
            args = (Storage(), offset, size, stride, False, collections.OrderedDict())
            return (torch._utils._rebuild_tensor_v2, args)

    return pickle.dumps({"ema": Tensor()}, protocol=4)


HOSTILE = {
    "empty": lambda: b"",
    "random bytes": lambda: b"\x80\x04" + np.random.default_rng(0).bytes(2000),
    "truncated fixture": lambda: PKL.read_bytes()[: PKL.stat().st_size // 2],
    "200,000-deep nested list": lambda: b"\x80\x04" + b"]" * 200_000 + b"a" * 199_999 + b".",
    "10^12 elements over 4": lambda: _tensor_pickle((10**12,), (1,)),
    "stride past the storage": lambda: _tensor_pickle((4, 4), (4, 1)),
    "offset past the storage": lambda: _tensor_pickle((2,), (1,), offset=3),
    "negative stride": lambda: _tensor_pickle((2,), (-1,), offset=3),
    "storage shorter than declared": lambda: _tensor_pickle((4,), (1,), data_numel=2),
    "storage of an unknown type": lambda: _tensor_pickle((4,), (1,), storage_type="ComplexFloatStorage"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_end_in_one_line(tmp_path, name):
    path = tmp_path / "hostile.pkl"
    path.write_bytes(HOSTILE[name]())
    assert len(path.read_bytes()) < 3_000_000  # small files: none may make the loader allocate much
    with pytest.raises(UserInputError) as exc:
        load_network(path)
    assert "\n" not in str(exc.value)
    status, err = _run("generate", "--net", str(path), "--seeds", "0", "--out", str(tmp_path / "o"))
    assert status == 2 and err.count("\n") == 1 and err.startswith("autoguidance: error:"), err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_the_control_tensor_pickle_is_well_formed():
    # The hostile tensor files differ from a loadable one only in the field under test.
    data = _tensor_pickle((2, 2), (2, 1))
    assert torch.equal(loads(data)["ema"], torch.zeros(2, 2))


def _png_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_command_line_end_to_end(tmp_path):
    # generate (PNGs and a grid), evaluate (on the fly equals the folder), convert (once; the converted
    # file gives bit-identical outputs, so the same PNGs), with the fixture as --net and as --guide.
    pkl, st = str(PKL), str(tmp_path / "net.safetensors")
    model = ["--guide", pkl, "--guidance", "2", "--seeds", "0-3", "--steps", "3", "--class", "7"]
    cli_main(["generate", "--net", pkl, *model, "--device", "cpu", "--out", str(tmp_path / "a")])
    assert np.asarray(Image.open(tmp_path / "a" / "seed000000.png")).shape == (16, 16, 4)
    cli_main(["generate", "--net", pkl, *model, "--grid", "--device", "cpu", "--out", str(tmp_path / "g")])
    assert (tmp_path / "g" / "grid.png").is_file()

    cli_main(["convert", pkl, st])
    net_pkl, _ = load_network(pkl)
    net_st, meta = load_network(st)
    assert meta["converted_from"]["sha256"] and meta["edm2_snapshot"]["loss_fn"]["class"] == "EDM2Loss"
    x, sigma, labels = torch.randn(3, 4, 16, 16), torch.tensor([0.02, 1.0, 40.0]), torch.tensor([0, 3, 9])
    with torch.no_grad():
        assert torch.equal(net_pkl(x, sigma, labels), net_st(x, sigma, labels))
    converted = ["--net", st, "--guide", st, *model[2:], "--device", "cpu", "--out", str(tmp_path / "b")]
    cli_main(["generate", *converted])
    assert _png_bytes(tmp_path / "a") == _png_bytes(tmp_path / "b")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_evaluate_on_the_fly_equals_the_generated_folder(tmp_path):
    from torch import nn

    class StandIn(nn.Module):  # a stand-in Inception file: (N, 3, 299, 299) -> (N, 2048)
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3 * 9 * 9, 2048)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x[:, :, ::37, ::37].flatten(1))

    torch.manual_seed(0)
    torch.jit.script(StandIn()).save(str(tmp_path / "standin.pt"))
    pkl = str(PKL)
    model = ["--net", pkl, "--guide", pkl, "--guidance", "1.5", "--seeds", "0-7", "--steps", "3"]
    cli_main(["generate", *model, "--device", "cpu", "--out", str(tmp_path / "imgs")])
    cli_main(["generate", "--net", pkl, "--seeds", "100-115", "--steps", "3", "--out", str(tmp_path / "ref")])
    common = [
        "--ref",
        str(tmp_path / "ref"),
        "--metrics",
        "fid",
        "--inception-weights",
        str(tmp_path / "standin.pt"),
    ]
    common += ["--device", "cpu", "--no-progress"]
    cli_main(["evaluate", *model, *common, "--out", str(tmp_path / "a.json")])
    cli_main(["evaluate", "--images", str(tmp_path / "imgs"), *common, "--out", str(tmp_path / "b.json")])
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["source"]["net"]["metadata"]["kind"] == "edm2_pickle"
    assert a["metrics"]["fid"] == pytest.approx(b["metrics"]["fid"], rel=1e-9)
