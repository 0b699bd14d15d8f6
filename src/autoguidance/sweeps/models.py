"""Networks for sweeps, made on demand and cached: post-hoc EMA reconstructions from a run's snapshots.

A network is named by (run, ema, at): a training run folder, an EMA width sigma_rel, and a training time
in images (a snapshot time; default the run's latest). Its reconstruction (training/phema.py, restricted
to the snapshots taken up to that time, EDM2 App. C.2) is written once to
cache/<run name>-<hash of its path>/at<images>/network-phema-<ema>.safetensors and read from there by
every later configuration and worker. A network file can stand in for a run (no ema, no at).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import UserInputError
from ..io import checkpoint
from ..io.networks import load_network
from ..nets.precond import EDM2Denoiser, NetConfig
from ..training import phema
from ..training.export import export_phema, phema_network_path


def _run_folder(cache_dir: Path, run: Path) -> Path:
    digest = hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"{run.name}-{digest}"


class ModelCache:
    """Resolve (run, ema, at) to a network file (reconstructing it on first use) and keep the last few
    loaded networks in memory, so that a sweep over w does not reload its models."""

    def __init__(self, cache_dir: str | os.PathLike, device: str | torch.device = "cpu", keep: int = 6):
        self.cache_dir = Path(cache_dir)
        self.device = torch.device(device)
        self.keep = keep
        self._loaded: OrderedDict[tuple, tuple[EDM2Denoiser, dict]] = OrderedDict()

    def snapshot_times(self, run: str | os.PathLike) -> list[int]:
        """Training times (images) at which `run` has snapshots."""
        return sorted({int(round(s.t)) for s in phema.list_snapshots(run)})

    def net_config(
        self, run: str | os.PathLike, ema: float | None = None, at: int | None = None
    ) -> NetConfig:
        """The network's config from file headers alone (no reconstruction): checks inputs cheaply."""
        run = Path(run)
        if run.is_file():
            if ema is not None or at is not None:
                raise UserInputError(
                    f"{run} is a network file: it has no EMA length or training time to choose"
                )
            meta = checkpoint.read_metadata(run)
        else:
            self._time(run, ema, at)
            meta = checkpoint.read_metadata(phema.list_snapshots(run)[-1].path, label="snapshot")
        if "net" not in meta:
            raise UserInputError(f"{run} has no network config in its metadata")
        return NetConfig.from_dict(meta["net"])

    def _time(self, run: Path, ema: float | None, at: int | None) -> tuple[float, int]:
        """The snapshot time (and its iteration) that (run, at) names; UserInputError if there is none."""
        if not run.is_dir():
            raise UserInputError(f"no training run or network file at {run}")
        if ema is None:
            raise UserInputError(f"choose an EMA length (sigma_rel) for the networks of run {run}")
        infos = phema.list_snapshots(run)
        times = sorted({s.t for s in infos})
        t = times[-1] if at is None else next((x for x in times if abs(x - at) <= 1e-6 * at), None)
        if t is None:
            shown = ", ".join(f"{int(x)}" for x in times[:4]) + (" ..." if len(times) > 4 else "")
            raise UserInputError(
                f"run {run} has no snapshots at {at} training images; it has {len(times)} times: {shown} "
                f"{int(times[-1])}"
            )
        return t, next(s.step for s in infos if s.t == t)

    def network_file(self, run: str | os.PathLike, ema: float | None = None, at: int | None = None) -> Path:
        run = Path(run)
        if run.is_file():
            if ema is not None or at is not None:
                raise UserInputError(
                    f"{run} is a network file: it has no EMA length or training time to choose"
                )
            return run
        t, step = self._time(run, ema, at)
        out_dir = _run_folder(self.cache_dir, run) / f"at{int(round(t))}"
        path = phema_network_path(out_dir, ema)
        if not path.exists():
            export_phema(run, [ema], at_step=step, out_dir=out_dir)  # atomic: racing workers are harmless
        return path

    def load(
        self, run: str | os.PathLike, ema: float | None = None, at: int | None = None
    ) -> tuple[EDM2Denoiser, dict]:
        """The network and its metadata (provenance: training images, sigma_rel, snapshots used)."""
        path = self.network_file(run, ema, at)
        key = (str(path),)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        net, meta = load_network(path, device=self.device)
        meta = {**meta, "file": str(path)}
        self._loaded[key] = (net, meta)
        while len(self._loaded) > self.keep:
            self._loaded.popitem(last=False)
        return net, meta
