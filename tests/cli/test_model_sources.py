"""`autoguidance generate` with EDM2 pickles, EDM2 presets (offline: a file:// mirror), training-free
guides, autoguidance + CFG, reduced precision and a VAE decoder; bad input exits 2 and writes nothing."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from autoguidance.cli import main as cli_main
from autoguidance.generate import generate_images
from autoguidance.guidance import guided
from autoguidance.guides.weak import DropoutGuide
from autoguidance.io.edm2_presets import EDM2_PRESETS
from autoguidance.io.networks import save_network
from autoguidance.nets import build
from autoguidance.nets.precond import NetConfig
from autoguidance.sampling import SamplerSettings
from edm2_writer import PersistentObject, _kwargs, _random_net, edm2_pickle_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    base = dict(
        img_resolution=8,
        img_channels=3,
        label_dim=4,
        model_channels=16,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
    )
    return NetConfig(**{**base, **kw})


def _pickle(path, config, seed, extra=None):
    net = _random_net(config, seed)
    path.write_bytes(edm2_pickle_bytes(net, _kwargs(config), extra))
    return net


def _run(*args):
    with pytest.raises(SystemExit) as e:
        cli_main([*args, "--device", "cpu"])
    return e.value.code


def _ok(*args):
    cli_main([*args, "--device", "cpu"])


def _png(path):
    return np.asarray(Image.open(path))


def test_pickle_with_weak_guide_and_cfg_matches_api(tmp_path):
    net = _pickle(tmp_path / "main.pkl", _cfg(), 0)
    torch.manual_seed(1)
    uncond = build(_cfg(label_dim=0))  # our own safetensors network as the unconditional guide
    save_network(tmp_path / "uncond.safetensors", uncond)
    common = ["--net", str(tmp_path / "main.pkl"), "--seeds", "0-1", "--steps", "3", "--class", "2"]
    _ok(
        "generate",
        *common,
        "--weak-guide",
        "dropout:0.2",
        "--weak-guide-seed",
        "4",
        "--guidance",
        "2",
        "--uncond",
        str(tmp_path / "uncond.safetensors"),
        "--uncond-guidance",
        "1.5",
        "--out",
        str(tmp_path / "a"),
    )
    meta = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert meta["weak_guide"] == {"spec": "dropout:0.2", "seed": 4} and meta["uncond_guidance"] == 1.5
    assert meta["net"]["metadata"]["kind"] == "edm2_pickle"
    sampler = SamplerSettings(steps=3)
    both = guided(net, DropoutGuide(net, 0.2, 4), 2.0, uncond=uncond.eval(), w_uncond=1.5)
    images, _ = generate_images(both, [0, 1], class_label=2, sampler=sampler)
    for seed in (0, 1):
        assert np.array_equal(_png(tmp_path / "a" / f"seed{seed:06d}.png"), images[seed].numpy())
    # the CFG term matters: without it the images differ
    plain, _ = generate_images(
        guided(net, DropoutGuide(net, 0.2, 4), 2.0), [0, 1], class_label=2, sampler=sampler
    )
    assert not torch.equal(plain, images)


def test_dtype_bf16_runs_and_stays_close(tmp_path):
    _pickle(tmp_path / "main.pkl", _cfg(), 0)
    common = ["--net", str(tmp_path / "main.pkl"), "--seeds", "0", "--steps", "3", "--class", "1"]
    _ok("generate", *common, "--out", str(tmp_path / "fp32"))
    _ok("generate", *common, "--dtype", "bf16", "--out", str(tmp_path / "bf16"))
    a, b = (_png(tmp_path / d / "seed000000.png").astype(int) for d in ("fp32", "bf16"))
    assert np.abs(a - b).mean() < 8  # bf16 keeps 8 bits of mantissa: images agree to a few levels


def test_preset_from_mirror_is_cached_with_checksums(tmp_path, monkeypatch):
    name = "edm2-img64-s-autog-fid"
    preset = EDM2_PRESETS[name]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _pickle(mirror / preset.net, _cfg(), 0)
    _pickle(mirror / preset.guide, _cfg(model_channels=8), 1)
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOGUIDANCE_EDM2_ROOT", mirror.as_uri())
    monkeypatch.setenv("AUTOGUIDANCE_CACHE", str(cache))
    args = ["generate", "--preset", name, "--seeds", "0", "--steps", "2", "--class", "0"]
    _ok(*args, "--out", str(tmp_path / "a"))
    meta = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert meta["settings"]["guidance"] == [preset.guidance] and meta["preset"]["name"] == name
    sums = json.loads((cache / "checksums.json").read_text())
    assert sums[preset.net] == meta["net"]["sha256"] and sums[preset.guide] == meta["guide"]["sha256"]
    # Offline now: the cache serves; a changed cached file is refused.
    (mirror / preset.net).unlink()
    _ok(*args, "--out", str(tmp_path / "b"))
    assert np.array_equal(_png(tmp_path / "a" / "seed000000.png"), _png(tmp_path / "b" / "seed000000.png"))
    (cache / preset.net).write_bytes((cache / preset.net).read_bytes() + b"x")
    assert _run(*args, "--out", str(tmp_path / "c")) == 2 and not (tmp_path / "c").exists()


def test_latent_pickle_decodes_through_vae(tmp_path):
    pytest.importorskip("diffusers")
    from untrained import tiny_vae

    vae = tiny_vae(0)
    vae.save_pretrained(tmp_path / "vae")
    enc = PersistentObject("StabilityVAEEncoder", vae_name="stabilityai/sd-vae-ft-mse")
    _pickle(tmp_path / "latent.pkl", _cfg(img_channels=4), 0, extra={"encoder": enc})
    _ok(
        "generate",
        "--net",
        str(tmp_path / "latent.pkl"),
        "--vae",
        str(tmp_path / "vae"),
        "--seeds",
        "0",
        "--steps",
        "2",
        "--class",
        "0",
        "--out",
        str(tmp_path / "o"),
    )
    assert _png(tmp_path / "o" / "seed000000.png").shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--preset", "edm2-nope"], "unknown EDM2 preset"),
        (["--net", "{main}", "--weak-guide", "blur:2", "--guidance", "2"], "bad weak guide"),
        (
            ["--net", "{main}", "--weak-guide", "dropout:0.1", "--guide", "{main}", "--guidance", "2"],
            "only one",
        ),
        (["--net", "{main}", "--weak-guide", "skip:unet.nope", "--guidance", "2"], "no module named"),
        (["--net", "{main}", "--guide", "{wide}", "--guidance", "2"], "works on 4x8x8 samples"),
        (["--net", "{main}", "--guide", "{other_classes}", "--guidance", "2"], "3 classes"),
        (["--net", "{main}", "--uncond", "{main}", "--uncond-guidance", "2"], "classes|unconditional"),
        (["--seeds", "0"], "--net"),
        (["--net", "{main}", "--uncond-guidance", "2"], "needs --uncond"),
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, args, needle):
    _pickle(tmp_path / "main.pkl", _cfg(), 0)
    _pickle(tmp_path / "wide.pkl", _cfg(img_channels=4), 1)
    _pickle(tmp_path / "other.pkl", _cfg(label_dim=3), 2)
    paths = {"main": "main.pkl", "wide": "wide.pkl", "other_classes": "other.pkl"}
    args = [a.format(**{k: tmp_path / v for k, v in paths.items()}) for a in args]
    assert _run("generate", *args, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoguidance: error:"), err
    import re

    assert re.search(needle, err), err
    assert not (tmp_path / "o").exists()


def test_unreachable_file_says_where_to_put_it(tmp_path):
    from autoguidance.errors import UserInputError
    from autoguidance.io.edm2_presets import resolve_file

    url = (tmp_path / "absent" / "edm2-img64-s-1073741-0.045.pkl").as_uri()
    with pytest.raises(UserInputError, match=r"put the file at .*cache/edm2-img64-s-1073741-0.045.pkl"):
        resolve_file(url, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no partial download
    with pytest.raises(UserInputError, match="not in the cache"):
        resolve_file(url, tmp_path / "cache", download=False)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 8 images: a singular covariance
def test_evaluate_with_pickle_and_weak_guide_equals_its_generated_folder(tmp_path, monkeypatch):
    # evaluate generates on the fly from an EDM2 pickle with a training-free guide; the numbers equal
    # those of the PNGs that generate writes with the same options.
    monkeypatch.setenv("AUTOGUIDANCE_CACHE", str(tmp_path / "cache"))
    _pickle(tmp_path / "digits.pkl", _cfg(img_channels=1, label_dim=10), 0)
    net = str(tmp_path / "digits.pkl")
    model = ["--net", net, "--weak-guide", "skip:unet.dec.4x4_in0", "--guidance", "2", "--seeds", "0-7",
             "--steps", "2"]  # fmt: skip
    _ok("generate", *model, "--out", str(tmp_path / "pngs"))
    common = ["evaluate", "--ref", "digits:train", "--metrics", "fd_classifier,classes", "--no-progress"]
    _ok(*common, *model, "--out", str(tmp_path / "a.json"))
    _ok(*common, "--images", str(tmp_path / "pngs"), "--out", str(tmp_path / "b.json"))
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["source"]["weak_guide"] == {"spec": "skip:unet.dec.4x4_in0", "seed": 0}
    assert a["metrics"]["fd_classifier"] == pytest.approx(b["metrics"]["fd_classifier"], rel=1e-6)
