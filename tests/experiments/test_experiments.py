"""Experiments on tiny networks: configurations, on-demand post-hoc EMA, common random numbers, degraded
denoisers, plans run into the store and reports redrawn from the store alone, one-line errors."""

import json
import shutil

import pytest
import torch

pytest.importorskip("optuna")

from autoguidance.cli import main  # noqa: E402
from autoguidance.errors import UserInputError  # noqa: E402
from autoguidance.generate import generate_images  # noqa: E402
from autoguidance.guidance import guided  # noqa: E402
from autoguidance.guides import DropoutGuide, InputNoiseGuide  # noqa: E402
from autoguidance.io.networks import load_network  # noqa: E402
from autoguidance.sampling import SamplerSettings  # noqa: E402
from autoguidance.sweeps.configs import expand, normalise, parse_sweep  # noqa: E402
from autoguidance.sweeps.evaluator import ImageEvaluator, generate  # noqa: E402
from autoguidance.sweeps.models import ModelCache  # noqa: E402
from autoguidance.sweeps.plan import Group, Plan, read_thumbnails, run_plan  # noqa: E402
from autoguidance.sweeps.report import write_report  # noqa: E402
from autoguidance.sweeps.store import ResultStore  # noqa: E402
from autoguidance.training.export import export_phema  # noqa: E402
from autoguidance.training.loop import TrainConfig, train  # noqa: E402
from untrained import save_untrained  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("nets")
    specs = {
        "main": ("xs", 8, 10),
        "guide": ("xxs", 8, 10),
        "uncond": ("xxs", 8, 0),
        "res32": ("xxs", 32, 10),
    }
    return save_untrained(folder, specs)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits run with snapshots every 4 iterations (16 iterations of batch 8)."""
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        dataset="digits",
        preset="xxs",
        warmup=2,
        t_ref=1000,
        batch_size=8,
        duration=8 * 16,
        snapshot_every=8 * 4,
        checkpoint_every=10**6,
    )
    assert train(config, folder, progress=False).finished
    return folder


def pixel_measure(images, labels):
    """A stand-in metric: mean intensity (cheap, and different for every configuration)."""
    return {"mean": float(images.double().mean()), "dark": float((images < 64).double().mean())}


def test_configurations_are_normalised_and_deduplicated(nets):
    base = {"main_run": str(nets["main"]), "steps": 3, "samples": 4}
    none = normalise({**base, "kind": "none", "w": 3.0, "guide_run": str(nets["guide"])})
    assert "w" not in none and "guide_run" not in none
    configs = expand(
        {**base, "guide_run": str(nets["guide"])}, {"kind": ["none", "autoguidance"], "w": [1, 2]}
    )
    assert [c["kind"] for c in configs] == ["none", "autoguidance", "autoguidance"]  # none once, not per w
    with pytest.raises(UserInputError, match="unknown configuration keys"):
        normalise({**base, "wieght": 2})
    with pytest.raises(UserInputError, match="needs guide_run"):
        normalise({**base, "kind": "autoguidance"})
    with pytest.raises(UserInputError, match="empty grid"):
        expand(base, {"w": []})
    with pytest.raises(UserInputError, match="unknown keys"):
        parse_sweep({"name": "x", "grid": {"w": [1]}, "grdi": {}})


def test_evaluator_images_are_generate_images_for_the_same_seeds(nets):
    # Common random numbers: a configuration's image for seed s is `generate`'s image for seed s, and
    # two configurations differ only by their guidance, not by their noise or classes.
    models = ModelCache(nets["main"].parent / "cache")
    config = normalise(
        {
            "kind": "autoguidance",
            "main_run": str(nets["main"]),
            "guide_run": str(nets["guide"]),
            "w": 2.0,
            "steps": 3,
            "samples": 5,
            "seed0": 10,
        }
    )
    images, labels, _ = generate(config, models, list(range(10, 15)), batch_size=2)
    main, _ = load_network(nets["main"])
    guide, _ = load_network(nets["guide"])
    ref, ref_labels = generate_images(
        guided(main, guide, 2.0), range(10, 15), sampler=SamplerSettings(steps=3), batch_size=4
    )
    assert torch.equal(images, ref) and torch.equal(labels, ref_labels)
    # Measured on a prefix then on all: the evaluator only adds the new seeds, with the same result.
    ev = ImageEvaluator(models, pixel_measure, batch_size=3)
    first = ev.at(config, 2)["metrics"]
    assert ev.at(config, 5)["metrics"] == pixel_measure(ref, None)
    assert first == pixel_measure(ref[:2], None)


def test_cfg_interval_and_interpolation_configurations_run(nets):
    models = ModelCache(nets["main"].parent / "cache")
    base = {
        "main_run": str(nets["main"]),
        "guide_run": str(nets["guide"]),
        "uncond_run": str(nets["uncond"]),
        "w": 2.0,
        "steps": 3,
        "samples": 2,
    }
    out = {}
    for kind, extra in (
        ("cfg", {}),
        ("cfg", {"interval": [0.5, 5.0]}),
        ("interpolation", {"alpha": 0.0}),
        ("interpolation", {"alpha": 1.0}),
        ("autoguidance", {}),
    ):
        c = normalise({**base, "kind": kind, **extra})
        out[(kind, json.dumps(extra))] = generate(c, models, [0, 1])[0]
    # alpha = 0 is CFG, alpha = 1 autoguidance (paper App. B.3), up to float rounding of the blend.
    assert (out[("interpolation", '{"alpha": 0.0}')].int() - out[("cfg", "{}")].int()).abs().max() <= 1
    assert (
        out[("interpolation", '{"alpha": 1.0}')].int() - out[("autoguidance", "{}")].int()
    ).abs().max() <= 1
    assert not torch.equal(out[("cfg", "{}")], out[("cfg", '{"interval": [0.5, 5.0]}')])


def test_degradations_are_deterministic_and_batch_independent(nets):
    main, _ = load_network(nets["main"])
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((3,), 1.5)
    cond = torch.tensor([1, 2, 3])
    for d in (InputNoiseGuide.raised_by(main, 0.2), DropoutGuide(main, 0.1)):
        whole = d(x, sigma, cond)
        one = d(x[1:2], sigma[1:2], cond[1:2])
        torch.testing.assert_close(whole[1:2], one, rtol=1e-5, atol=1e-5)
        assert torch.equal(d(x, sigma, cond), whole)
        assert not torch.allclose(whole, main(x, sigma, cond))


def test_model_cache_reconstructs_at_snapshot_times(run, tmp_path):
    models = ModelCache(tmp_path / "cache")
    times = models.snapshot_times(run)
    assert times == [32, 64, 96, 128]
    path = models.network_file(run, 0.1, at=64)
    again = models.network_file(run, 0.1, at=64)
    assert path == again and path.exists()
    export_phema(run, [0.1], at_step=8, out_dir=tmp_path / "direct")  # iteration 8 = 64 images
    a, meta = load_network(path)
    b, _ = load_network(tmp_path / "direct" / "network-phema-0.100.safetensors")
    assert meta["training_images"] == 64
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    with pytest.raises(UserInputError, match="no snapshots at 50"):
        models.network_file(run, 0.1, at=50)
    with pytest.raises(UserInputError, match="EMA length"):
        models.network_file(run)


def test_plan_runs_into_the_store_and_redraws_from_it_alone(run, tmp_path):
    # The models live in a copy of the run; after the sweep the copy and the cache are deleted, and the
    # report is redrawn from the store alone, identical.
    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "main")
    base = {"main_run": str(runs / "main"), "main_ema": 0.1, "steps": 3, "samples": 4}
    ag = {**base, "kind": "autoguidance", "guide_run": str(runs / "main"), "guide_at": 32, "guide_ema": 0.05}
    plan = Plan(
        "curves",
        "mean",
        [
            Group("no guidance", "w", [{**base, "kind": "none"}]),
            Group("autoguidance", "w", [normalise({**ag, "w": w}) for w in (1.5, 2.5)]),
        ],
        {"note": "test"},
    )
    plan.groups[0].configs = [normalise(c) for c in plan.groups[0].configs]
    store = ResultStore(tmp_path / "store.db")
    done = run_plan(store, plan, ImageEvaluator(ModelCache(tmp_path / "cache"), pixel_measure, batch_size=4))
    assert done.evaluated == 3
    first = write_report(store, "curves", tmp_path / "a")
    assert first["measured"] == 3 and first["groups"][1]["best"] is not None
    shutil.rmtree(runs)
    shutil.rmtree(tmp_path / "cache")
    again = write_report(ResultStore(tmp_path / "store.db"), "curves", tmp_path / "b")
    assert again == first
    for name in ["curves.md", "curves.json", *first["files"]]:
        assert (tmp_path / "b" / name).stat().st_size > 0
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert {"curves-main.png", "curves-images.png", "curves-grid.png"} <= set(first["files"])
    md = (tmp_path / "b" / "curves.md").read_text()
    assert "autoguidance" in md and "3 of 3 configurations measured" in md
    thumbs = store.rows("curves")[0].info["thumbnails"]
    assert read_thumbnails(thumbs).shape == (4, 8, 8, 1)  # the first seeds' images, kept in the store


def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line_and_exit_2(nets, tmp_path, capsys):
    store = str(tmp_path / "s.db")
    good = {
        "name": "s",
        "metric": "fd_classifier",
        "fixed": {"main_run": str(nets["main"]), "steps": 2},
        "grid": {"kind": ["autoguidance"], "guide_run": [str(nets["guide"])], "w": [2]},
    }
    bad_key = tmp_path / "bad_key.json"
    bad_key.write_text(json.dumps({**good, "grdi": {}}))
    assert "unknown keys" in _cli_error(["sweep", str(bad_key), "--store", store], capsys)
    bad_field = tmp_path / "bad_field.json"
    bad_field.write_text(json.dumps({**good, "grid": {"wieght": [2]}}))
    assert "unknown grid keys" in _cli_error(["sweep", str(bad_field), "--store", store], capsys)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**good, "grid": {"w": []}}))
    assert "empty grid" in _cli_error(["sweep", str(empty), "--store", store], capsys)
    other_res = tmp_path / "res.json"
    other_res.write_text(
        json.dumps({**good, "grid": {"kind": ["autoguidance"], "guide_run": [str(nets["res32"])], "w": [2]}})
    )
    assert "8x8" in _cli_error(["sweep", str(other_res), "--store", store, "--no-progress"], capsys)
    assert "no configurations" not in _cli_error(
        ["experiment", "curves", "--out", str(tmp_path), "--w", ""], capsys
    )
    assert "no experiment" in _cli_error(
        ["experiment", "curves", "--out", str(tmp_path / "nothing"), "--redraw"], capsys
    )
    assert "NAME=PATH" in _cli_error(
        ["experiment", "table1", "--out", str(tmp_path), "--run", "oops"], capsys
    )
    good_file = tmp_path / "good.json"
    good_file.write_text(json.dumps(good))
    missing = str(tmp_path / "none.safetensors")
    argv = ["sweep", str(good_file), "--store", store, "--ref-stats", missing]
    assert "does not exist" in _cli_error(argv, capsys)
    assert "empty" in _cli_error(
        [
            "tune",
            "--main-run",
            str(nets["main"]),
            "--guide-run",
            str(nets["guide"]),
            "--w",
            "2",
            "--ema-main",
            "0.1",
            "--ema-guide",
            "0.1",
            "--store",
            store,
        ],
        capsys,
    )


TORCHRUN_SWEEP = """
import sys
import torch
from autoguidance.sweeps.configs import normalise
from autoguidance.sweeps.plan import Group, Plan
from autoguidance.cli.session import run_plan_everywhere

def pixel_measure(images, labels):
    return {"mean": float(images.double().mean()), "n": len(images)}

torch.set_num_threads(1)
main, guide, store, cache = sys.argv[1:5]
base = {"main_run": main, "steps": 2, "samples": 5, "kind": "autoguidance", "guide_run": guide}
plan = Plan("p", "mean", [Group("ag", "w", [normalise({**base, "w": w}) for w in (1.5, 3.0)])])
run_plan_everywhere(plan, store, cache, ["mean"], {"reference": "mnist"}, "cpu", 2, True, False,
                    echo=lambda s: None, measure=pixel_measure)
"""


@pytest.mark.slow
def test_sweep_under_torchrun_equals_one_process(nets, tmp_path, torchrun):
    script = tmp_path / "sweep.py"
    script.write_text(TORCHRUN_SWEEP)
    rows = {}
    for nproc in (1, 2):
        store = tmp_path / f"{nproc}.db"
        torchrun(
            nproc, str(script), str(nets["main"]), str(nets["guide"]), str(store), str(tmp_path / "cache")
        )
        rows[nproc] = sorted((r.key, r.value, r.metrics["n"]) for r in ResultStore(store).rows("p"))
    assert len(rows[1]) == 2 and rows[1] == rows[2]  # seeds sharded over 2 processes: the same images


def test_metrics_measure_flattens_the_metrics_package(tmp_path, monkeypatch):
    from autoguidance.data import load_builtin
    from autoguidance.images import to_uint8
    from autoguidance.sweeps.measure import MetricsMeasure, direction_of

    monkeypatch.setenv("AUTOGUIDANCE_CACHE", str(tmp_path))  # the digits classifier is trained here
    data = load_builtin("digits", split="test")
    images = to_uint8(data.images)
    m = MetricsMeasure(["fd_classifier", "pr_classifier.recall", "classes"], reference="digits")
    real = m(images, data.labels)
    assert {"fd_classifier", "pr_classifier.precision", "pr_classifier.recall", "classes.agreement"} <= set(
        real
    )
    assert real["classes.agreement"] > 0.8
    shuffled = m(
        images, data.labels[torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))]
    )
    assert shuffled["classes.agreement"] < 0.5 and shuffled["fd_classifier"] == real["fd_classifier"]
    dark = m((images.float() * 0.5).to(torch.uint8), None)
    assert dark["fd_classifier"] > 2 * real["fd_classifier"]
    assert direction_of("pr_classifier.recall") == "maximize" and direction_of("fd_classifier") == "minimize"
    with pytest.raises(UserInputError, match="unknown metric"):
        MetricsMeasure(["fd_nothing"])


def test_metrics_measure_takes_reference_statistics_files(tmp_path, monkeypatch):
    # A statistics file stands in for computing the reference dataset's statistics (FID's Inception
    # statistics of a fixed subset, say): the statistics of digits' test split, saved to a file and given
    # with a *different* --reference, must give the distances against the test split, not the reference's.
    from autoguidance.data import load_builtin
    from autoguidance.images import to_uint8
    from autoguidance.metrics.detectors import make_detector
    from autoguidance.metrics.reference import compute_reference, save_reference
    from autoguidance.sweeps.measure import MetricsMeasure

    monkeypatch.setenv("AUTOGUIDANCE_CACHE", str(tmp_path))
    test_split = load_builtin("digits", split="test").images
    test, train = to_uint8(test_split), to_uint8(load_builtin("digits", split="train").images)
    det = make_detector("classifier", dataset="digits")
    stats = tmp_path / "test-stats.safetensors"
    save_reference(stats, compute_reference(test_split, det, "digits:test"))
    from_file = MetricsMeasure(["fd_classifier"], reference="digits", ref_stats=[stats])
    computed = MetricsMeasure(["fd_classifier"], reference="digits")  # digits:train statistics
    for split, own, other in ((test, from_file, computed), (train, computed, from_file)):
        assert own(split, None)["fd_classifier"] < 1e-3  # a split against its own statistics
        assert other(split, None)["fd_classifier"] > 0.1
    with pytest.raises(UserInputError, match="does not exist"):
        MetricsMeasure(["fd_classifier"], ref_stats=[tmp_path / "missing.safetensors"])


def test_a_later_run_of_an_experiment_joins_its_plan(tmp_path):
    from autoguidance.sweeps.plan import load_plan, save_plan

    store = ResultStore(tmp_path / "p.db")
    a = {"kind": "none", "main_run": "/m", "steps": 2, "samples": 2, "seed0": 0}
    b = {**a, "kind": "autoguidance", "guide_run": "/g", "w": 2.0}
    save_plan(store, Plan("table1", "mean", [Group("no guidance", "w", [a], "cond")]))
    save_plan(
        store, Plan("table1", "mean", [Group("ag", "w", [b], "cond"), Group("no guidance", "w", [a], "cond")])
    )
    plan = load_plan(store, "table1")
    assert [(g.label, len(g.configs)) for g in plan.groups] == [("no guidance", 1), ("ag", 1)]
    with pytest.raises(UserInputError, match="measures mean"):
        save_plan(store, Plan("table1", "other", [Group("x", "w", [a])]))


def test_report_picks_the_best_by_the_metrics_direction(tmp_path):
    # Recall is maximised: each group's best is its highest point, and the table says so.
    from autoguidance.sweeps.report import collect

    base = {"kind": "autoguidance", "main_run": "/m", "guide_run": "/g", "steps": 2, "samples": 2}
    configs = [normalise({**base, "w": w}) for w in (1.5, 2.0, 3.0)]
    plan = Plan("curves", "pr.recall", [Group("ag", "w", configs)])
    recall = {1.5: 0.7, 2.0: 0.9, 3.0: 0.5}
    store = ResultStore(tmp_path / "r.db")
    run_plan(store, plan, lambda c: {"metrics": {"pr.recall": recall[c["w"]]}, "info": {}})
    _, summary = collect(store, "curves")
    assert summary["groups"][0]["best"]["x"] == 2.0
    write_report(store, "curves", tmp_path / "out")
    assert "(higher is better)" in (tmp_path / "out" / "curves.md").read_text()
