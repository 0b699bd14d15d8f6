"""Image generation: per-seed determinism, guidance wiring, sharding, grids, the `generate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoguidance.cli import main
from autoguidance.distributed import gather_sharded, shard_seeds
from autoguidance.generate import generate_images
from autoguidance.guidance import guided
from autoguidance.images import make_grid
from autoguidance.io.networks import load_network
from autoguidance.nets.precond import EDM2Denoiser
from autoguidance.sampling import SamplerSettings, edm_sigmas
from untrained import save_untrained

STEPS = 4  # 7 evaluations per image: enough to exercise Heun and the interval, fast on a CPU
SAMPLER = SamplerSettings(steps=STEPS)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("nets")
    specs = {
        "cond": ("xs", 8, 10),
        "cond_guide": ("xxs", 8, 10),
        "uncond": ("xs", 8, 0),
        "uncond_guide": ("xxs", 8, 0),
        "cond5": ("xxs", 8, 5),
        "res32": ("xxs", 32, 10),
    }
    paths = save_untrained(folder, specs, dataset="test")
    paths["corrupt"] = folder / "corrupt.safetensors"
    paths["corrupt"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return paths


@pytest.fixture(scope="module")
def nets(ckpts) -> dict[str, EDM2Denoiser]:
    return {k: load_network(ckpts[k])[0] for k in ("cond", "cond_guide", "uncond", "uncond_guide")}


def _assert_same_images(a: torch.Tensor, b: torch.Tensor) -> None:
    # Convolution and matmul kernels round differently at different batch sizes (~1e-5 in float32), so
    # a pixel right at a quantisation boundary may land one level apart; nothing more is allowed.
    diff = (a.int() - b.int()).abs()
    assert a.shape == b.shape and int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


# --- library -----------------------------------------------------------------------------------------------


def test_generation_is_batch_size_independent_per_seed(nets):
    seeds = [3, 0, 11, 5, 7, 1, 2]
    full, labels = generate_images(nets["cond"], seeds, sampler=SAMPLER, batch_size=len(seeds))
    assert full.shape == (7, 8, 8, 1) and full.dtype == torch.uint8 and labels.shape == (7,)
    assert full.float().std() > 10  # real images, not a constant
    for bs in (1, 3):
        images, lab = generate_images(nets["cond"], seeds, sampler=SAMPLER, batch_size=bs)
        assert torch.equal(lab, labels)
        _assert_same_images(images, full)
    # A seed's image does not depend on which other seeds share its batch.
    alone, _ = generate_images(nets["cond"], [11], sampler=SAMPLER)
    _assert_same_images(alone, full[2:3])
    uncond, none = generate_images(nets["uncond"], seeds[:3], sampler=SAMPLER, batch_size=2)
    assert none is None and uncond.shape == (3, 8, 8, 1)


def test_class_label_fixes_every_class(nets):
    drawn, drawn_labels = generate_images(nets["cond"], range(4), sampler=SAMPLER)
    k = int(drawn_labels[0])
    images, labels = generate_images(nets["cond"], range(4), sampler=SAMPLER, class_label=k)
    assert labels.tolist() == [k] * 4
    # The class is still drawn from each seed's stream (same noise, same generator state after it), so
    # fixing seed 0's class to the one it drew reproduces its image exactly.
    assert torch.equal(images[drawn_labels == k], drawn[drawn_labels == k])


def test_weight_one_with_guide_equals_no_guide_and_other_weights_differ(nets):
    seeds = range(4)
    plain, _ = generate_images(nets["cond"], seeds, sampler=SAMPLER)
    w1, _ = generate_images(guided(nets["cond"], nets["cond_guide"], 1.0), seeds, sampler=SAMPLER)
    assert torch.equal(plain, w1)  # w = 1 never evaluates the guide: bitwise the main model alone
    w2, _ = generate_images(guided(nets["cond"], nets["cond_guide"], 2.0), seeds, sampler=SAMPLER)
    assert (w2.int() - plain.int()).abs().float().mean() > 1.0
    # An unconditional guide for a conditional net: CFG, the guide called without labels.
    cfg, _ = generate_images(guided(nets["cond"], nets["uncond_guide"], 2.0), seeds, sampler=SAMPLER)
    assert (cfg.int() - plain.int()).abs().float().mean() > 1.0


def test_guidance_interval_evaluates_guide_only_inside(nets):
    guide, main_net = nets["cond_guide"], nets["cond"]
    calls: dict[str, list[float]] = {"guide": [], "main": []}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, key=key: calls[key].extend(args[1].tolist()))
        for m, key in ((guide, "guide"), (main_net, "main"))
    ]
    lo, hi = 0.5, 10.0
    try:
        denoiser = guided(main_net, guide, 2.0, interval=(lo, hi))
        generate_images(denoiser, range(3), sampler=SamplerSettings(steps=8), batch_size=3)
    finally:
        for h in hooks:
            h.remove()
    sig = edm_sigmas(8).tolist()
    # Heun evaluates at sigma_i (i < N) and, for its correction, at sigma_{i+1} when that is > 0.
    evals = sig[:-1] + [s for s in sig[1:] if s > 0]
    # The interval is decided per step from sigma_i: a guided step is guided in both its evaluations.
    steps = [i for i in range(8) if lo < sig[i] <= hi]
    inside = [sig[i] for i in steps] + [sig[i + 1] for i in steps if sig[i + 1] > 0]
    assert 0 < len(inside) < len(evals)
    assert len(calls["main"]) == 3 * len(evals)
    assert len(calls["guide"]) == 3 * len(inside)
    assert sorted(set(calls["guide"])) == pytest.approx(sorted(set(inside)), rel=1e-6)  # float32 sigmas
    assert any(s <= lo for s in calls["guide"])  # the last guided step's correction lies below lo


def test_shard_seeds_deals_out_whole_batches():
    seeds = list(range(10, 21))  # 11 seeds
    assert shard_seeds(seeds, 0, 2) == seeds[0::2] and shard_seeds(seeds, 1, 2) == seeds[1::2]
    shares = [shard_seeds(seeds, r, 3, batch_size=2) for r in range(3)]
    assert shares == [[10, 11, 16, 17], [12, 13, 18, 19], [14, 15, 20]]
    assert sorted(s for share in shares for s in share) == seeds
    assert shard_seeds(seeds, 0, 1, batch_size=4) == seeds
    assert shard_seeds([1, 2], 3, 4) == []
    with pytest.raises(ValueError):
        shard_seeds(seeds, 2, 2)
    local = torch.arange(5)
    assert torch.equal(gather_sharded(local, 5), local)  # no process group: a single process


def test_make_grid_places_cells_row_major():
    rows, cols, h, w = 3, 4, 5, 6
    cells = np.zeros((rows, cols, h, w, 1), np.uint8)
    for r in range(rows):
        for k in range(cols):
            cells[r, k] = 10 * r + k
    grid = make_grid(cells, pad=2, fill=255)
    assert grid.shape == (rows * h + 2 * (rows - 1), cols * w + 2 * (cols - 1), 1)
    assert grid[(h + 2) * 2, (w + 2) * 3, 0] == 23  # top-left pixel of row 2, column 3
    assert grid[h, 0, 0] == 255 and grid[h + 1, 0, 0] == 255  # the gap between rows 0 and 1
    assert make_grid(cells, pad=0).shape == (rows * h, cols * w, 1)


# --- the command -----------------------------------------------------------------------------------------


def _run(args: list[str]) -> None:
    main(["generate", "--device", "cpu", "--steps", str(STEPS), *args])


def test_cli_writes_one_png_per_seed_and_metadata(ckpts, tmp_path):
    out = tmp_path / "out"
    _run(
        [
            "--net",
            str(ckpts["cond"]),
            "--guide",
            str(ckpts["cond_guide"]),
            "--guidance",
            "2",
            "--interval",
            "0.1,5",
            "--seeds",
            "0-2,10",
            "--batch",
            "3",
            "--out",
            str(out),
        ]
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["generate-config.json", "generate.json"] + [f"seed{s:06d}.png" for s in (0, 1, 2, 10)]
    with Image.open(out / "seed000010.png") as im:
        assert im.size == (8, 8) and im.mode == "L"
    meta = json.loads((out / "generate.json").read_text())
    assert meta["settings"]["guidance"] == [2.0] and meta["settings"]["interval"] == [0.1, 5.0]
    assert meta["guide"]["metadata"]["preset"] == "xxs" and len(meta["net"]["sha256"]) == 64
    assert set(meta["labels"]) == {"0", "1", "2", "10"} and meta["timings"]["images"] == 4
    # Several weights: a folder per weight; w = 1 there is the unguided image.
    out2 = tmp_path / "out2"
    _run(
        [
            "--net",
            str(ckpts["cond"]),
            "--guide",
            str(ckpts["cond_guide"]),
            "--guidance",
            "1,2",
            "--seeds",
            "0-2,10",
            "--batch",
            "3",
            "--out",
            str(out2),
        ]
    )
    assert (out2 / "w1" / "seed000010.png").is_file() and (out2 / "w2" / "seed000010.png").is_file()
    plain = tmp_path / "plain"
    _run(["--net", str(ckpts["cond"]), "--seeds", "0-2,10", "--batch", "3", "--out", str(plain)])
    assert (out2 / "w1" / "seed000001.png").read_bytes() == (plain / "seed000001.png").read_bytes()


@pytest.mark.parametrize(
    "net, weights, seeds, rows, cols",
    [
        ("cond", "1,2", "0-2", 10, 6),  # rows = classes, columns = weights x seeds
        ("cond", "2", "0-2", 10, 3),  # one weight: columns = seeds
        ("uncond", "1,1.5,2", "0-1", 2, 3),  # rows = seeds, columns = weights
        ("uncond", "2", "0-4", 1, 5),  # one row of seeds
    ],
)
def test_cli_grid_layout(ckpts, tmp_path, net, weights, seeds, rows, cols):
    guide = "cond_guide" if net == "cond" else "uncond_guide"
    _run(
        [
            "--net",
            str(ckpts[net]),
            "--guide",
            str(ckpts[guide]),
            "--guidance",
            weights,
            "--seeds",
            seeds,
            "--steps",
            "2",
            "--grid",
            "--out",
            str(tmp_path),
        ]
    )
    with Image.open(tmp_path / "grid.png") as im:
        # The cells (8x8, 1 pixel apart) fill the bottom right; labels take a margin above and to the left.
        width, height = im.size
        assert width - (cols * 8 + cols - 1) >= 8 and height - (rows * 8 + rows - 1) >= 10
    meta = json.loads((tmp_path / "generate.json").read_text())
    assert len(meta["grid_layout"]["row_values"]) == rows
    assert len(meta["grid_layout"]["column_values"]) == cols
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generate-config.json", "generate.json", "grid.png"]


@pytest.mark.slow
def test_torchrun_one_and_two_processes_give_identical_pngs(ckpts, tmp_path, torchrun):
    common = [
        "--net",
        str(ckpts["cond"]),
        "--guide",
        str(ckpts["cond_guide"]),
        "--guidance",
        "2",
        "--seeds",
        "0-4",
        "--steps",
        "3",
    ]
    # --batch counts images per step over all processes: 2 over two processes is 1 per process, the
    # batch of one process with --batch 1, so the per-seed images agree bit for bit.
    generate = ["-m", "autoguidance", "generate", "--device", "cpu", *common]
    torchrun(1, *generate, "--batch", "1", "--out", str(tmp_path / "one"))
    torchrun(2, *generate, "--batch", "2", "--out", str(tmp_path / "two"))
    torchrun(2, *generate, "--batch", "2", "--class", "3", "--grid", "--out", str(tmp_path / "grid"))
    for seed in range(5):
        name = f"seed{seed:06d}.png"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    meta = json.loads((tmp_path / "two" / "generate.json").read_text())
    assert meta["settings"]["world_size"] == 2 and sorted(meta["labels"]) == ["0", "1", "2", "3", "4"]
    # The grid gathered from two processes holds the same images as one process's per-seed PNGs.
    _run([*common, "--batch", "1", "--class", "3", "--out", str(tmp_path / "single")])
    grid = np.asarray(Image.open(tmp_path / "grid" / "grid.png"))
    left = grid.shape[1] - (5 * 9 - 1)  # one row of five 8x8 cells in the bottom right, under labels
    for seed in range(5):
        cell = grid[-8:, left + seed * 9 : left + seed * 9 + 8]
        assert np.array_equal(cell, np.asarray(Image.open(tmp_path / "single" / f"seed{seed:06d}.png")))


# --- bad input -------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "guide_resolution": (["--guide", "{res32}", "--guidance", "2"], "1x32x32 samples"),
    "guide_labels": (["--guide", "{cond5}", "--guidance", "2"], "classes"),
    "corrupt_net": (["--net", "{corrupt}"], "corrupt"),
    "corrupt_guide": (["--guide", "{corrupt}", "--guidance", "2"], "corrupt"),
    "missing_net": (["--net", "{cond}.missing"], "not found"),
    "seed_range_reversed": (["--seeds", "5-2"], "seed"),
    "seed_range_text": (["--seeds", "abc"], "seed"),
    "guidance_nan": (["--guide", "{cond_guide}", "--guidance", "nan"], "finite"),
    "guidance_negative": (["--guide", "{cond_guide}", "--guidance", "2,-1"], ">= 0"),
    "guidance_text": (["--guide", "{cond_guide}", "--guidance", "x"], "guidance weight"),
    "guidance_without_guide": (["--guidance", "2"], "--guide"),
    "guide_without_guidance": (["--guide", "{cond_guide}"], "--guidance"),
    "interval_reversed": (["--guide", "{cond_guide}", "--guidance", "2", "--interval", "3,1"], "interval"),
    "interval_one_number": (["--guide", "{cond_guide}", "--guidance", "2", "--interval", "3"], "interval"),
    "class_out_of_range": (["--class", "10"], "class"),
    "class_negative": (["--class", "-1"], "class"),
    "class_unconditional": (["--net", "{uncond}", "--class", "0"], "unconditional"),
    "steps_zero": (["--steps", "0"], "steps"),
    "batch_zero": (["--batch", "0"], "batch"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(ckpts, tmp_path, capsys, case):
    extra, needle = BAD_INPUTS[case]
    extra = [a.format(**{k: str(v) for k, v in ckpts.items()}) for a in extra]
    args = ["generate", "--device", "cpu", "--steps", "2", "--net", str(ckpts["cond"]), "--seeds", "0-1"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*args, *extra, "--out", str(out)])  # a later --net / --steps overrides the default one
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoguidance: error:") and needle in err, err
    assert not out.exists()
