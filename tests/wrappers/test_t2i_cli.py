"""`autoguidance generate-text` end to end on tiny pipelines saved to folders: images, the JSON of
settings, the Figure 5-6 grid, LoRA guides, IF stages II and III; bad input gets one line on stderr,
exit status 2, before any sampling, and nothing written."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("peft")
import tiny_pipelines as tiny  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i-cli")
    tiny.sd(0).save_pretrained(root / "sd")
    tiny.sd(1, with_text=False).save_pretrained(root / "sd-guide")  # a guide needs no text encoder
    tiny.sd_unet(2).save_pretrained(root / "sd-unet-ckpt")  # an earlier checkpoint: the network alone
    tiny.sd(3, cross=32).save_pretrained(root / "sd-wide")  # another text width
    tiny.sd_unet(4, in_channels=8).save_pretrained(root / "sd-unet-8ch")  # another latent shape
    tiny.deepfloyd_if(0).save_pretrained(root / "if")
    tiny.deepfloyd_if(1, with_text=False).save_pretrained(root / "if-guide")
    tiny.if_stage2().save_pretrained(root / "if-2")
    tiny.if_stage3().save_pretrained(root / "if-3")
    pipe = tiny.sd(0)
    tiny.save_lora(pipe, "unet", tiny.lora_state(pipe.unet, 1), root / "lora-a")
    tiny.save_lora(pipe, "unet", tiny.lora_state(pipe.unet, 2), root / "lora-b")
    wide = tiny.sd(0, cross=32)
    tiny.save_lora(wide, "unet", tiny.lora_state(wide.unet, 3), root / "lora-wide")
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(root / "uncond")
    broken = root / "sd-broken"
    tiny.sd(5).save_pretrained(broken)
    for f in (broken / "unet").iterdir():
        if f.suffix == ".safetensors":
            f.unlink()
    return root


def _run(*args):
    from autoguidance.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate-text", *map(str, args)])
    return e.value.code


def _ok(*args):
    from autoguidance.cli import main

    main(["generate-text", *map(str, args)])


def _png(path):
    return np.asarray(Image.open(path))


COMMON = ("--prompt", "a red cat", "--steps", "3", "--device", "cpu")


def test_guided_images_and_their_settings(folders, tmp_path):
    sd = folders / "sd"
    _ok("--model", sd, *COMMON, "--seeds", "0-1", "--out", tmp_path / "plain")
    guide = ("--guide", folders / "sd-guide")
    _ok("--model", sd, *COMMON, "--seeds", "0-1", *guide, "--guidance", "1", "--out", tmp_path / "w1")
    _ok("--model", sd, *COMMON, "--seeds", "0-1", *guide, "--guidance", "2.5", "--cfg", "2",
        "--negative-prompt", "blue", "--interval", "0.1,10", "--out", tmp_path / "both")  # fmt: skip
    _ok("--model", sd, *COMMON, "--seeds", "1", "--guide", folders / "sd-unet-ckpt", "--guidance", "2",
        "--solver", "euler", "--schedule", "scheduler", "--out", tmp_path / "ckpt")  # fmt: skip
    for d in ("plain", "w1", "both"):
        assert _png(tmp_path / d / "seed000001.png").shape == (16, 16, 3)
    assert np.array_equal(_png(tmp_path / "plain/seed000000.png"), _png(tmp_path / "w1/seed000000.png"))
    assert not np.array_equal(_png(tmp_path / "plain/seed000000.png"), _png(tmp_path / "both/seed000000.png"))
    meta = json.loads((tmp_path / "both" / "generate.json").read_text())
    assert meta["settings"]["weights"] == {"cfg": 2.0, "autoguidance": 2.5}
    assert meta["settings"]["negative_prompt"] == "blue" and meta["settings"]["interval"] == [0.1, 10.0]
    assert meta["guide"]["kind"] == "model" and meta["model_info"]["family"] == "sd"
    assert len(meta["sigmas"]) == 4 and meta["seconds_per_image"] > 0
    ckpt = json.loads((tmp_path / "ckpt" / "generate.json").read_text())
    assert ckpt["settings"]["schedule"] == "scheduler" and ckpt["sigmas"][-1] == 0.0
    # EulerDiscreteScheduler's "leading" spacing at 3 steps: timesteps 667, 334, 1
    sched = tiny.euler()
    sched.set_timesteps(3)
    assert ckpt["sigmas"] == pytest.approx([float(v) for v in sched.sigmas], rel=1e-6)


def test_the_interpolation_grid_with_if_stages(folders, tmp_path):
    out = tmp_path / "grid"
    stages = ("--stage2", folders / "if-2", "--stage3", folders / "if-3")
    stages += ("--stage2-steps", "2", "--stage3-steps", "2")
    _ok("--model", folders / "if", *COMMON, "--seeds", "5", "--guide", folders / "if-guide", "--grid",
        "--grid-w", "1,3", "--grid-alpha", "0,0.5,1", *stages, "--out", out)  # fmt: skip
    meta = json.loads((out / "grid.json").read_text())
    assert meta["grid"]["w"] == [1.0, 3.0] and meta["grid"]["alpha"] == [0.0, 0.5, 1.0]
    assert meta["grid"]["cells"]["w3-alpha0.5.png"] == {"w": 3.0, "alpha": 0.5, "w_cfg": 2.0, "w_ag": 2.0}
    assert meta["x0_clip"]["dynamic"] is True  # IF's scheduler: dynamic thresholding
    cells = {f"w{w:g}-alpha{a:g}.png" for w in (1, 3) for a in (0, 0.5, 1)}
    assert cells | {"grid.png", "grid.json"} == set(os.listdir(out))
    assert _png(out / "w3-alpha1.png").shape == (64, 64, 3)  # stage III: 8 -> 16 -> 64 pixels
    assert np.array_equal(_png(out / "w1-alpha0.png"), _png(out / "w1-alpha1.png"))  # w = 1: unguided
    assert not np.array_equal(_png(out / "w3-alpha0.png"), _png(out / "w3-alpha1.png"))
    assert _png(out / "grid.png").shape[0] > 2 * 64


def test_lora_guides(folders, tmp_path):
    sd = folders / "sd"
    base = ("--model", sd, *COMMON, "--seeds", "0", "--lora", folders / "lora-a", "--lora-scale", "0.9")
    _ok(*base, "--out", tmp_path / "main")
    _ok(*base, "--guide-lora-scale", "0.9", "--guidance", "3", "--out", tmp_path / "same")
    _ok(*base, "--guide-lora-scale", "0", "--guidance", "3", "--out", tmp_path / "base")
    _ok(
        *base,
        "--guide-lora",
        folders / "lora-b",
        "--guidance",
        "3",
        "--cfg",
        "2",
        "--out",
        tmp_path / "other",
    )
    main = _png(tmp_path / "main/seed000000.png")
    assert np.array_equal(main, _png(tmp_path / "same/seed000000.png"))  # guide at the main scale: nothing
    assert not np.array_equal(main, _png(tmp_path / "base/seed000000.png"))
    meta = json.loads((tmp_path / "other" / "generate.json").read_text())
    assert meta["guide"] == {"kind": "lora", "adapters": "guide x 1"} and meta["lora"]["main"] == "main x 0.9"
    _ok("--model", sd, *COMMON, "--seeds", "0", "--weak-guide", "attention:0.2", "--guidance", "2",
        "--out", tmp_path / "weak")  # fmt: skip
    assert json.loads((tmp_path / "weak/generate.json").read_text())["guide"]["spec"] == "attention:0.2"


BAD = {
    "guide of another family": (
        ("--guide", "if-guide", "--guidance", "2"),
        "must be of the main model's family",
    ),
    "latent shape": (("--guide", "sd-unet-8ch", "--guidance", "2"), "works on 8x8x8 samples"),
    "text width": (("--guide", "sd-wide", "--guidance", "2"), "text width"),
    "LoRA that does not fit": (("--lora", "lora-wide"), "does not fit"),
    "missing LoRA": (("--lora", "nope.safetensors"), "no such file"),
    "missing guide folder": (("--guide", "missing", "--guidance", "2"), "no such folder"),
    "guide without weights": (("--guide", "sd-broken", "--guidance", "2"), "cannot load"),
    "two guides": (("--guide", "sd-guide", "--weak-guide", "attention:0.5"), "give one guide"),
    "guidance without guide": (("--guidance", "2"), "needs a guide"),
    "grid with two seeds": (("--guide", "sd-guide", "--grid", "--seeds", "0-1"), "one seed"),
    "bad weak guide": (("--weak-guide", "skip:nowhere", "--guidance", "2"), "no module named"),
    "stage II for SD": (("--stage2", "if-2"), "upscale DeepFloyd IF"),
    "alpha with cfg": (
        ("--guide", "sd-guide", "--alpha", "0.5", "--guidance", "2", "--cfg", "2"),
        "leave --cfg",
    ),
    "bad image size": (("--height", "18"), "multiple of"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(folders, tmp_path, capfd, case):
    args, message = BAD[case]
    args = [str(folders / a) if (folders / a).exists() and a not in ("0-1",) else a for a in args]
    if "nope.safetensors" in args:
        args[args.index("nope.safetensors")] = str(tmp_path / "nope.safetensors")
    if "missing" in args:
        args[args.index("missing")] = str(tmp_path / "missing")
    out = tmp_path / "out"
    capfd.readouterr()
    assert _run("--model", folders / "sd", *COMMON, *args, "--out", out) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autoguidance: error:") and message in err[0], err
    assert not out.exists()


def test_a_prompt_for_an_unconditional_model(folders, tmp_path, capfd):
    assert _run("--model", folders / "uncond", *COMMON, "--out", tmp_path / "x") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes no prompt" in err[0] and "generate-diffusers" in err[0]
    assert _run("--model", folders / "if-2", *COMMON, "--out", tmp_path / "x") == 2
    assert "--stage2" in capfd.readouterr().err
    assert not (tmp_path / "x").exists()
