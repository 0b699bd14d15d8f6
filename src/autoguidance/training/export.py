"""Networks out of a finished (or running) training run: post-hoc EMA reconstruction from its snapshots.

The snapshots of all tracked EMA lengths are combined by least squares (phema.py, EDM2 App. C.2) into the
EMA of any sigma_rel at any snapshot's time, then written as ordinary network files (io/networks.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserInputError
from ..io import checkpoint
from ..io.networks import save_network
from ..nets.precond import NetConfig, build
from . import phema
from .ema import sigma_rel_to_gamma

# Snapshot metadata that describes the snapshot itself, not the run: not copied to reconstructed networks.
_SNAPSHOT_KEYS = {"kind", "t", "gamma", "step", "sigma_rel", "format_version", "net"}


def parse_sigma_rels(text: str) -> list[float]:
    """'0.05,0.10' -> [0.05, 0.1]; UserInputError for anything that is not a list of valid EMA widths."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            bad = part.strip()
            raise UserInputError(f"bad sigma_rel {bad!r} in {text!r}: expected e.g. 0.05,0.10") from None
        sigma_rel_to_gamma(value)  # range check, UserInputError if out of (0, ~0.30]
        values.append(value)
    return values


def sigma_rel_tag(sigma_rel: float) -> str:
    """'0.050' for 0.05: three decimals, or more when needed to tell the value apart (for file names)."""
    tag = f"{sigma_rel:.3f}"
    return tag if float(tag) == sigma_rel else f"{sigma_rel:.6g}"


def phema_network_path(out_dir: str | os.PathLike, sigma_rel: float) -> Path:
    return Path(out_dir) / f"network-phema-{sigma_rel_tag(sigma_rel)}.safetensors"


def export_phema(
    run_dir: str | os.PathLike,
    sigma_rels: Sequence[float],
    at_step: int | None = None,
    out_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Write out_dir/network-phema-<sigma_rel>.safetensors for each requested EMA width; return the paths.

    at_step: the training iteration to reconstruct at (it must have snapshots); default the latest.
    Only snapshots taken at or before that time are used. out_dir defaults to run_dir.
    """
    infos = phema.list_snapshots(run_dir)
    if at_step is None:
        at_step = max(s.step for s in infos)
    at = [s for s in infos if s.step == at_step]
    if not at:
        steps = sorted({s.step for s in infos})
        raise UserInputError(
            f"no snapshots at iteration {at_step} in {run_dir}: {len(steps)} snapshot iterations from "
            f"{steps[0]} to {steps[-1]} (every {steps[1] - steps[0] if len(steps) > 1 else steps[0]})"
        )
    target_t = at[0].t
    _, meta = checkpoint.load(at[-1].path, kind=phema.SNAPSHOT_KIND)
    if "net" not in meta:
        raise UserInputError(f"snapshot {at[-1].path} has no network config: not written by `train`?")
    net = build(NetConfig.from_dict(meta["net"]))
    results = phema.reconstruct_files(infos, list(sigma_rels), target_t)
    provenance = {k: v for k, v in meta.items() if k not in _SNAPSHOT_KEYS}
    used = sum(1 for s in infos if s.t <= target_t * (1 + 1e-9))
    paths = []
    for sigma_rel, tensors in zip(sigma_rels, results, strict=True):
        checkpoint.load_into(net, tensors, f"snapshots in {run_dir}")
        path = phema_network_path(out_dir if out_dir is not None else run_dir, sigma_rel)
        save_network(
            path,
            net,
            {
                **provenance,
                "weights": "phema",
                "sigma_rel": float(sigma_rel),
                "ema_gamma": sigma_rel_to_gamma(sigma_rel),
                "step": int(at_step),
                "training_images": target_t,
                "phema_snapshots": used,
            },
        )
        paths.append(path)
    return paths
