"""GPU benchmark for EDM2-sized networks: images/s unguided and autoguided (S main, XS guide) at
ImageNet-512 (latents 4x64x64) and ImageNet-64 (3x64x64), in fp32, fp16 and bf16, and the agreement of
fp16 / bf16 with fp32 (denoiser outputs and final samples from the same seeds).

Run by a GPU owner:     python benchmarks/gpu_interop.py --device cuda --out bench_gpu.json
Smoke check on a CPU:   python benchmarks/gpu_interop.py --tiny

Weights: random (gains set non-zero so that every layer contributes) unless --net/--guide give EDM2
pickles or checkpoints, e.g. the files of `--preset edm2-img512-s-autog-fid` from the cache. Random
weights measure speed exactly and precision only roughly (trained weights have other magnitudes).
Latent decoding (the VAE) is not timed: it is the same for every configuration.
Stated tolerances (checked, printed as PASS/FAIL): relative RMS difference of D(x; sigma) to fp32 at
most 1e-2 (fp16) and 4e-2 (bf16) at every sigma; final samples within 5e-2 relative RMS (fp16).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from autoguidance.guidance import guided as guided_denoiser
from autoguidance.io.networks import load_network
from autoguidance.nets.precond import EDM2Denoiser, NetConfig
from autoguidance.sampling import edm_sigmas, sample
from autoguidance.seeds import SeedStreams
from autoguidance.wrappers.precision import DTYPES, LowPrecision

TOL_D = {"fp16": 1e-2, "bf16": 4e-2}
TOL_SAMPLE = {"fp16": 5e-2, "bf16": 2e-1}


def edm2_config(res: int, channels: int, width: int, tiny: bool) -> NetConfig:
    """EDM2's img512 / img64 layout (channel_mult 1,2,3,4, 3 blocks, attention at 16 and 8, 1000
    classes); --tiny shrinks it for a CPU smoke run."""
    if tiny:
        return NetConfig(res, channels, 10, width, (1, 2), 1, (res // 2,), edm2_heads=True)
    return NetConfig(res, channels, 1000, width, (1, 2, 3, 4), 3, (16, 8), edm2_heads=True)


def random_net(config: NetConfig, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = EDM2Denoiser(config)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 0:
                p.fill_(1.0)
    return net.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run(denoiser, shape, seeds, steps, device, label_dim) -> torch.Tensor:
    streams = SeedStreams(seeds)
    x = streams.randn(shape, device=device)
    cond = streams.randint(label_dim, device=device) if label_dim else None
    return sample(denoiser, x, edm_sigmas(steps), cond, solver="heun")


def images_per_s(denoiser, shape, batch, steps, device, label_dim, repeats) -> float:
    run(denoiser, shape, list(range(batch)), 2, device, label_dim)  # warm-up (kernels, allocator)
    sync(device)
    t = time.perf_counter()
    for r in range(repeats):
        run(denoiser, shape, list(range(r * batch, (r + 1) * batch)), steps, device, label_dim)
    sync(device)
    return repeats * batch / (time.perf_counter() - t)


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(
        (a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt().clamp_min(1e-12)
    )


@torch.no_grad()
def agreement(net, dtype_name, shape, device, label_dim, steps) -> dict:
    low = LowPrecision(net, DTYPES[dtype_name])
    g = torch.Generator().manual_seed(0)
    per_sigma = {}
    for s in (0.01, 0.1, 1.0, 10.0, 80.0):
        y = torch.randn(4, *shape, generator=g).to(device) * 0.5
        x = y + s * torch.randn(4, *shape, generator=g).to(device)
        sig = torch.full((4,), s, device=device)
        cond = torch.arange(4, device=device) % max(label_dim, 1) if label_dim else None
        per_sigma[str(s)] = rel_rms(low(x, sig, cond), net(x, sig, cond))
    final = rel_rms(
        run(low, shape, [0, 1], steps, device, label_dim), run(net, shape, [0, 1], steps, device, label_dim)
    )
    ok = max(per_sigma.values()) <= TOL_D[dtype_name] and final <= TOL_SAMPLE[dtype_name]
    return {"D_rel_rms_by_sigma": per_sigma, "sample_rel_rms": final, "pass": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="small networks and few steps: a CPU smoke run")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtypes", default="fp32,fp16,bf16")
    ap.add_argument("--configs", default="img512,img64")
    ap.add_argument("--net", default=None, help="main network file (else random weights)")
    ap.add_argument("--guide", default=None, help="guide network file (else random weights)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.tiny:
        args.steps, args.batch, args.repeats = min(args.steps, 4), min(args.batch, 4), 1
        torch.set_num_threads(1)
    device = torch.device(args.device)
    # (resolution, channels): img512 samples 4x64x64 latents, img64 3x64x64 pixels (EDM2 S = 192, XS = 128).
    layouts = {"img512": (64, 4), "img64": (64, 3)}
    widths = (16, 8) if args.tiny else (192, 128)
    results = {"device": str(device), "torch": torch.__version__, "steps": args.steps, "batch": args.batch}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    for name in args.configs.split(","):
        res, ch = layouts[name]
        if args.tiny:
            res = 16
        if args.net:
            main_net = load_network(args.net, device)[0]
            guide_net = load_network(args.guide, device)[0]
        else:
            main_net = random_net(edm2_config(res, ch, widths[0], args.tiny), 0).to(device)
            guide_net = random_net(edm2_config(res, ch, widths[1], args.tiny), 1).to(device)
        cfg = main_net.config
        shape = (cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
        entry = {
            "shape": list(shape),
            "main_channels": cfg.model_channels,
            "guide_channels": guide_net.config.model_channels,
        }
        for dt in args.dtypes.split(","):
            m = main_net if dt == "fp32" else LowPrecision(main_net, DTYPES[dt])
            g = guide_net if dt == "fp32" else LowPrecision(guide_net, DTYPES[dt])
            unguided = images_per_s(m, shape, args.batch, args.steps, device, cfg.label_dim, args.repeats)
            guided_d = guided_denoiser(m, g, 2.1)
            guided = images_per_s(
                guided_d, shape, args.batch, args.steps, device, cfg.label_dim, args.repeats
            )
            entry[dt] = {"unguided_images_per_s": unguided, "autoguided_images_per_s": guided}
            if dt != "fp32":
                entry[dt]["agreement"] = agreement(main_net, dt, shape, device, cfg.label_dim, args.steps)
            a = entry[dt].get("agreement")
            verdict = ""
            if a is not None:
                worst = max(a["D_rel_rms_by_sigma"].values())
                state = "PASS" if a["pass"] else "FAIL"
                verdict = f"  D rel.RMS max {worst:.2e}, samples {a['sample_rel_rms']:.2e} {state}"
            print(
                f"{name} {dt}: {unguided:.2f} img/s unguided, {guided:.2f} img/s autoguided{verdict}",
                flush=True,
            )
        results[name] = entry
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
