"""`autoguidance evaluate`: a folder equals the same seeds generated on the fly, two torchrun processes
equal one, EDM2-style reference pickles work, and bad input is one line with exit status 2."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoguidance.cli import main
from autoguidance.images import save_png
from autoguidance.io.networks import save_network
from autoguidance.metrics.detectors import make_detector
from autoguidance.metrics.detectors.inception import InceptionDetector
from autoguidance.metrics.frechet import FeatureStats, frechet_distance_gaussians
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning"),
]
STEPS = "2"


class _StandIn(nn.Module):
    """A stand-in Inception file: (N, 3, 299, 299) -> (N, 2048)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 9 * 9, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x[:, :, ::37, ::37].flatten(1))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Files shared by the tests: a digits-sized net and guide, a stand-in Inception file, a cache dir
    (with the digits classifier trained once) that torchrun children see through the environment."""
    folder = tmp_path_factory.mktemp("evaluate")
    before = os.environ.get("AUTOGUIDANCE_CACHE")
    os.environ["AUTOGUIDANCE_CACHE"] = str(folder / "cache")
    torch.manual_seed(0)
    paths = {}
    for key, preset in (("net", "xs"), ("guide", "xxs")):
        net = build(preset_config(preset, 8, 1, 10))
        with torch.no_grad():
            for p in net.parameters():
                if p.ndim == 0:
                    p.fill_(1.0)  # output gains at 1: the random UNet shows through
        paths[key] = folder / f"{key}.safetensors"
        save_network(paths[key], net, {"dataset": "digits", "preset": preset})
    paths["inception"] = folder / "standin.pt"
    torch.jit.script(_StandIn()).save(str(paths["inception"]))
    make_detector("classifier", dataset="digits")  # train and cache once
    yield paths
    if before is None:
        del os.environ["AUTOGUIDANCE_CACHE"]
    else:
        os.environ["AUTOGUIDANCE_CACHE"] = before


def _evaluate(args: list[str], out: Path) -> dict:
    main(["evaluate", "--device", "cpu", "--no-progress", *args, "--out", str(out)])
    return json.loads(out.read_text())


def _model_args(env, seeds="0-11") -> list[str]:
    return ["--net", str(env["net"]), "--guide", str(env["guide"]), "--guidance", "2", "--seeds", seeds,
            "--steps", STEPS]  # fmt: skip


ALL = "fd_classifier,pr_classifier,classes,fid,pr_inception"


@pytest.mark.slow
def test_folder_equals_generating_on_the_fly(env, tmp_path):
    common = ["--ref", "digits:train", "--metrics", ALL, "--inception-weights", str(env["inception"])]
    main(["generate", "--device", "cpu", *_model_args(env), "--batch", "5", "--out", str(tmp_path / "pngs")])
    folder = _evaluate([*common, "--images", str(tmp_path / "pngs"), "--batch", "5"], tmp_path / "a.json")
    fly = _evaluate([*common, *_model_args(env), "--batch", "5"], tmp_path / "b.json")
    assert folder["counts"]["images"] == fly["counts"]["images"] == 12
    for name in ("fd_classifier", "fid"):
        assert folder["metrics"][name] == pytest.approx(fly["metrics"][name], rel=1e-9)
    for name in ("pr_classifier", "pr_inception"):
        assert folder["metrics"][name] == fly["metrics"][name]
    assert folder["metrics"]["classes"]["histogram"] == fly["metrics"]["classes"]["histogram"]
    # generate.json's labels give the folder the same class agreement.
    assert (
        folder["metrics"]["classes"] == fly["metrics"]["classes"]
        and fly["metrics"]["classes"]["labelled"] == 12
    )
    # The record carries the configuration, counts, timings and detector versions.
    assert fly["source"]["guidance"] == 2.0 and fly["source"]["sampler"]["steps"] == 2
    assert fly["detectors"]["classifier"]["version"].startswith("classifier-v1/digits/")
    assert fly["references"]["inception"]["count"] == 1618 and fly["timings"]["evaluate_s"] > 0


@pytest.mark.slow
def test_reference_statistics_are_cached_and_fd_is_the_direct_computation(env, tmp_path):
    from autoguidance.data import load_builtin
    from autoguidance.metrics.image_sources import dataset_uint8
    from autoguidance.metrics.reference import cached_path

    main(["generate", "--device", "cpu", *_model_args(env, "0-7"), "--out", str(tmp_path / "pngs")])
    args = ["--images", str(tmp_path / "pngs"), "--ref", "digits:test", "--metrics", "fid"]
    args += ["--inception-weights", str(env["inception"])]
    first = _evaluate(args, tmp_path / "a.json")
    det = InceptionDetector(env["inception"])
    assert cached_path("digits:test", det).is_file()
    ref = FeatureStats.of(det.features(dataset_uint8(load_builtin("digits", "test").images)))
    ours = json.loads((tmp_path / "a.json").read_text())
    from autoguidance.metrics.image_sources import folder_batches, scan_folder

    info = scan_folder(tmp_path / "pngs")
    feats = torch.cat([det.features(x) for x, _ in folder_batches(tmp_path / "pngs", info, 64)])
    fake = FeatureStats.of(feats)
    direct = frechet_distance_gaussians(fake.mean, fake.cov, ref.mean, ref.cov)
    assert ours["metrics"]["fid"] == pytest.approx(direct, rel=1e-6)
    # The same numbers from EDM2's pickle layout (restricted unpickling).
    pkl = tmp_path / "ref.pkl"
    pkl.write_bytes(pickle.dumps({"fid": {"mu": ref.mean, "sigma": ref.cov}}))
    from_pickle = _evaluate([*args[:2], "--ref", str(pkl), *args[4:]], tmp_path / "b.json")
    assert from_pickle["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-6)
    # --ref-stats gives one detector its statistics; the classifier still uses the dataset --ref.
    both = [*args[:2], "--ref", "digits:train", "--ref-stats", str(pkl), "--metrics", "fid,fd_classifier"]
    mixed = _evaluate([*both, *args[6:8]], tmp_path / "c.json")
    assert mixed["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-6)
    assert mixed["references"]["inception"]["detector_version"] is None  # EDM2's pickles do not say
    assert mixed["references"]["classifier"]["dataset"] == "digits:train"


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(env, tmp_path, torchrun):
    common = [
        "-m",
        "autoguidance.cli",
        "evaluate",
        "--device",
        "cpu",
        "--no-progress",
        "--ref",
        "digits:train",
    ]
    common += ["--metrics", "fd_classifier,pr_classifier,classes", "--batch", "4", *_model_args(env, "0-10")]
    torchrun(1, *common, "--out", str(tmp_path / "one.json"))
    torchrun(2, *common, "--out", str(tmp_path / "two.json"))
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["config"]["world_size"] == 2 and two["counts"]["images"] == 11
    # The float64 sums are added in another order (per process, then across): equal up to rounding, which
    # the matrix square root of this rank-deficient covariance (11 samples, 128-d) amplifies to ~1e-8.
    assert two["metrics"]["fd_classifier"] == pytest.approx(one["metrics"]["fd_classifier"], rel=1e-6)
    assert two["metrics"]["pr_classifier"] == one["metrics"]["pr_classifier"]
    assert two["metrics"]["classes"] == one["metrics"]["classes"]


def _write_pngs(folder: Path, n: int, size: int, channels: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        save_png(folder / f"{i}.png", rng.integers(0, 256, (size, size, channels), dtype=np.uint8))


BAD_INPUTS = {
    "reference_resolution": (["--ref", "{folder16}", "--metrics", "fid"], "16x16"),
    "reference_channels": (["--ref", "{folder_rgb}", "--metrics", "fid"], "channel"),
    "missing_weights": (["--metrics", "fid", "--inception-weights", "{tmp}/missing.pt"], "does not exist"),
    "wrong_weights": (["--metrics", "fid", "--inception-weights", "{junk}"], "cannot load Inception"),
    "no_images": (["--images", "{empty}", "--no-net"], "no PNG or JPEG"),
    "images_and_net": (["--images", "{folder16}"], "exactly one"),
    "unknown_metric": (["--metrics", "fid,is"], "unknown metric"),
    "pr_without_reference_features": (["--ref", "{pkl}", "--metrics", "pr_inception"], "reference features"),
    "pickle_that_runs_code": (["--ref", "{evil}", "--metrics", "fid"], "posix.system, which could run code"),
    "classifier_without_builtin": (["--ref", "{folder16}", "--metrics", "fd_classifier"], "built-in"),
    "two_weights": (["--guidance", "1,2"], "one guidance weight"),
    "no_reference": (["--metrics", "fid", "--no-ref"], "give --ref or --ref-stats"),
}


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(env, tmp_path, capsys, case):
    _write_pngs(tmp_path / "folder16", 3, 16, 1)
    _write_pngs(tmp_path / "folder_rgb", 3, 8, 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    (tmp_path / "ref.pkl").write_bytes(pickle.dumps({"fid": {"mu": np.zeros(2048), "sigma": np.eye(2048)}}))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"fid": _Evil()}))
    names = {"tmp": tmp_path, "junk": tmp_path / "junk.pt", "pkl": tmp_path / "ref.pkl"}
    names.update({k: tmp_path / k for k in ("folder16", "folder_rgb", "empty")}, evil=tmp_path / "evil.pkl")
    extra, needle = BAD_INPUTS[case]
    extra = [a.format(**{k: str(v) for k, v in names.items()}) for a in extra]
    model = [] if "--no-net" in extra else _model_args(env, "0-1")
    ref = [] if "--no-ref" in extra else ["--ref", "digits:train"]
    extra = [a for a in extra if a not in ("--no-net", "--no-ref")]
    args = [
        "evaluate",
        "--device",
        "cpu",
        *ref,
        "--inception-weights",
        str(env["inception"]),
    ]
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exc:
        main([*args, *model, *extra, "--out", str(out)])  # later options override earlier ones
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoguidance: error:") and needle in err, err
    assert not out.exists()
