"""Post-hoc EMA reconstruction from snapshots (EDM2, Karras et al. 2024, Sec. 3 and App. C.2).

During training a few power-function EMAs (`ema.py`) are saved as snapshots at regular times. Any snapshot
i is an average of the parameter trajectory with a known profile p_i (time t_i, exponent gamma_i), so a
linear combination sum_i x_i theta_i averages the trajectory with sum_i x_i p_i. Choosing x by least
squares in L2 against a target profile p_target gives an EMA of any other sigma_rel, at any snapshot time,
after the fact. Parameters enter only through that final weighted sum, so it streams one snapshot at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import UserInputError
from ..io import checkpoint
from .ema import gamma_to_sigma_rel, sigma_rel_to_gamma

SNAPSHOT_KIND = "ema_snapshot"
SNAPSHOT_DIR = "snapshots"
# Snapshot times are floats written through JSON; "at or before the target" allows for their rounding.
_T_RTOL = 1e-9

Snapshot = tuple[float, float, Mapping[str, torch.Tensor]]
"""An in-memory snapshot: (training time t, exponent gamma, parameter name -> tensor)."""


# ---------------------------------------------------------------------------------------------------------
# Profile algebra (numbers only, float64)


def profile_inner(t_a: ArrayLike, gamma_a: ArrayLike, t_b: ArrayLike, gamma_b: ArrayLike) -> np.ndarray:
    """L2 inner product <p_a, p_b> of power-function profiles p(tau) = (gamma+1)/t (tau/t)^gamma on [0, t].

    Broadcasts its arguments; returns float64 in 1 / (time unit). For t_a <= t_b the integral over
    [0, t_a] is (ga+1)(gb+1)(t_a/t_b)^gb / ((ga+gb+1) t_b) (EDM2 App. C.2); it is symmetric, so the
    shorter profile's time plays t_a. Needs ga + gb > -1 for the integral to exist.
    """
    t_a, gamma_a, t_b, gamma_b = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (t_a, gamma_a, t_b, gamma_b))
    )
    a_first = t_a <= t_b
    t_lo = np.where(a_first, t_a, t_b)
    t_hi = np.where(a_first, t_b, t_a)
    gamma_hi = np.where(a_first, gamma_b, gamma_a)  # the exponent of the longer profile
    return (gamma_a + 1) * (gamma_b + 1) * (t_lo / t_hi) ** gamma_hi / ((gamma_a + gamma_b + 1) * t_hi)


def solve_weights(
    snapshot_t: ArrayLike, snapshot_gamma: ArrayLike, target_t: ArrayLike, target_gamma: ArrayLike
) -> np.ndarray:
    """Least-squares weights X, shape (n_snapshots, n_targets), with column k summing to 1.

    sum_i X_ik p_i is the L2 projection of target profile k onto the snapshot profiles: the normal
    equations A X = B with A_ij = <p_i, p_j>, B_ik = <p_i, p_target_k> (EDM2 App. C.2). A is a Gram
    matrix of similar profiles and badly conditioned, so it is solved with lstsq in float64 (a minimum-norm
    solution when near-singular). Normalising the columns keeps the reconstruction an average (unit total
    weight), which the least-squares fit satisfies only approximately. Times: any unit, same for all.
    """
    t_i = np.atleast_1d(np.asarray(snapshot_t, dtype=np.float64))
    g_i = np.atleast_1d(np.asarray(snapshot_gamma, dtype=np.float64))
    t_k, g_k = np.broadcast_arrays(
        np.atleast_1d(np.asarray(target_t, dtype=np.float64)),
        np.atleast_1d(np.asarray(target_gamma, dtype=np.float64)),
    )
    if t_i.ndim != 1 or t_i.shape != g_i.shape or t_i.size == 0:
        raise UserInputError("snapshot times and exponents must be equal-length, non-empty 1-D lists")
    for name, t, g in (("snapshot", t_i, g_i), ("target", t_k, g_k)):
        if not (np.all(np.isfinite(t)) and np.all(t > 0)):
            raise UserInputError(f"{name} times must be finite and > 0")
        # gamma > -1/2 keeps every <p, p> finite (ga + gb > -1); sigma_rel_to_gamma never goes below -0.382
        if not (np.all(np.isfinite(g)) and np.all(g > -0.5)):
            raise UserInputError(f"{name} EMA exponents must be finite and > -0.5")
    # The inner product scales as 1/t, so dividing all times by the largest changes nothing but keeps
    # the matrix entries O(1) whether t counts iterations or hundreds of millions of images.
    scale = max(t_i.max(), t_k.max())
    t_i, t_k = t_i / scale, t_k / scale
    a = profile_inner(t_i[:, None], g_i[:, None], t_i[None, :], g_i[None, :])
    b = profile_inner(t_i[:, None], g_i[:, None], t_k[None, :], g_k[None, :])
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    total = x.sum(axis=0, keepdims=True)
    if not np.all(np.abs(total) > 1e-6):
        raise UserInputError("post-hoc EMA: the snapshots cannot represent the target profile")
    return x / total


# ---------------------------------------------------------------------------------------------------------
# Snapshot files


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot file and its metadata, read without loading its tensors."""

    path: Path
    t: float  # training time of the snapshot (images or iterations, as the run counts)
    gamma: float  # exponent of its power-function profile
    sigma_rel: float  # the same profile's relative std (unitless)
    step: int  # training iteration at which it was written


def snapshot_path(run_dir: str | os.PathLike, step: int, sigma_rel: float) -> Path:
    """Conventional file name of a snapshot: run_dir/snapshots/phema-<step>-<sigma_rel>.safetensors."""
    return Path(run_dir) / SNAPSHOT_DIR / f"phema-{int(step):010d}-{sigma_rel:.4f}.safetensors"


def save_snapshot(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    t: float,
    gamma: float,
    step: int,
    extra_meta: Mapping[str, Any] | None = None,
) -> None:
    """Atomically write one EMA's tensors with {"kind": "ema_snapshot", t, gamma, sigma_rel, step} metadata.

    t: training time of the EMA (same unit for all snapshots of a run); gamma: its exponent; extra_meta:
    further JSON-serialisable fields (e.g. the network config), which must not reuse the reserved keys.
    """
    meta = {"kind": SNAPSHOT_KIND, "t": float(t), "gamma": float(gamma), "step": int(step)}
    meta["sigma_rel"] = gamma_to_sigma_rel(meta["gamma"])
    extra = dict(extra_meta or {})
    clash = sorted(set(extra) & (set(meta) | {"format_version"}))
    if clash:
        raise ValueError(f"extra_meta must not set the reserved snapshot keys {clash}")
    if not (math.isfinite(meta["t"]) and meta["t"] > 0):
        raise ValueError(f"snapshot time must be finite and > 0, got {t}")
    checkpoint.save(path, dict(tensors), {**extra, **meta})


def _read_info(path: Path) -> SnapshotInfo:
    """Read a snapshot's metadata from the safetensors header only (cheap: no tensor data is read)."""
    meta = checkpoint.read_metadata(path, label="snapshot")
    if meta.get("kind") != SNAPSHOT_KIND:
        raise UserInputError(f"file {path} holds a {meta.get('kind')!r} checkpoint, expected an EMA snapshot")
    try:
        t, gamma, step = float(meta["t"]), float(meta["gamma"]), int(meta["step"])
    except (KeyError, TypeError, ValueError):
        raise UserInputError(f"snapshot {path} lacks a numeric t, gamma or step in its metadata") from None
    if not (math.isfinite(t) and t > 0 and math.isfinite(gamma) and gamma > -1):
        raise UserInputError(f"snapshot {path} has an invalid time {t} or exponent {gamma}")
    return SnapshotInfo(path=path, t=t, gamma=gamma, sigma_rel=gamma_to_sigma_rel(gamma), step=step)


def list_snapshots(run_dir: str | os.PathLike) -> list[SnapshotInfo]:
    """All snapshots in run_dir/snapshots/*.safetensors, sorted by time (then exponent, then name)."""
    if not Path(run_dir).is_dir():
        raise UserInputError(f"run folder {run_dir} does not exist")
    folder = Path(run_dir) / SNAPSHOT_DIR
    hint = "training writes them every --snapshot-every images and at the end of the run"
    if not folder.is_dir():
        raise UserInputError(f"no EMA snapshots in {run_dir}: folder {folder} does not exist ({hint})")
    # Leading-dot names are the atomic writer's unfinished temporary files.
    paths = sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith(".") and p.is_file())
    if not paths:
        raise UserInputError(f"no EMA snapshots in {folder} ({hint})")
    infos = [_read_info(p) for p in paths]
    return sorted(infos, key=lambda s: (s.t, s.gamma, s.path.name))


# ---------------------------------------------------------------------------------------------------------
# Reconstruction


def _select(times: np.ndarray, target_t: float | None) -> tuple[float, np.ndarray]:
    """Target time (default: the latest snapshot) and the mask of snapshots taken at or before it.

    Later snapshots are left out: they average parameters from after the target time, which the target
    profile does not contain, and a reconstruction at time t should not depend on the future.
    """
    if times.size == 0:
        raise UserInputError("post-hoc EMA: no snapshots given")
    last = float(times.max())
    if target_t is None:
        target_t = last
    target_t = float(target_t)
    if not (math.isfinite(target_t) and target_t > 0):
        raise UserInputError(f"post-hoc EMA target time must be finite and > 0, got {target_t}")
    if target_t > last * (1 + _T_RTOL):
        raise UserInputError(f"post-hoc EMA target time {target_t:g} is beyond the last snapshot ({last:g})")
    use = times <= target_t * (1 + _T_RTOL)
    if not use.any():
        raise UserInputError(
            f"post-hoc EMA target time {target_t:g} is before the first snapshot ({times.min():g})"
        )
    return target_t, use


def _target_gammas(target_sigma_rel: Sequence[float] | float) -> list[float]:
    sigmas = [target_sigma_rel] if np.ndim(target_sigma_rel) == 0 else list(target_sigma_rel)
    if not sigmas:
        raise UserInputError("post-hoc EMA: no target sigma_rel given")
    return [sigma_rel_to_gamma(s) for s in sigmas]


class _Accumulator:
    """Running sums theta_k = sum_i X_ik theta_i for every target k, with layout checks between snapshots.

    Floating tensors are summed in float32 (float64 for float64 inputs) and returned in the snapshot dtype.
    Integer tensors (counters) cannot be averaged: the last snapshot added, i.e. the latest, wins.
    """

    def __init__(self, n_targets: int) -> None:
        self.layout: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None
        self.sums: list[dict[str, torch.Tensor]] = [{} for _ in range(n_targets)]

    def add(self, tensors: Mapping[str, torch.Tensor], weights: np.ndarray, label: str) -> None:
        layout = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            diff = _layout_diff(self.layout, layout)
            raise UserInputError(f"snapshot {label} does not match the others: {diff}")
        for sums, w in zip(self.sums, weights, strict=True):
            for name, v in tensors.items():
                if not v.is_floating_point():
                    sums[name] = v.clone()
                    continue
                acc_dtype = torch.promote_types(v.dtype, torch.float32)
                if name not in sums:
                    sums[name] = torch.zeros(v.shape, dtype=acc_dtype, device=v.device)
                sums[name].add_(v.to(acc_dtype), alpha=float(w))

    def result(self) -> list[dict[str, torch.Tensor]]:
        assert self.layout is not None
        return [{k: v.to(self.layout[k][1]) for k, v in sums.items()} for sums in self.sums]


def _layout_diff(ref: dict, new: dict) -> str:
    missing, extra = sorted(set(ref) - set(new)), sorted(set(new) - set(ref))
    if missing or extra:
        return f"missing tensors {missing[:3]}, unexpected {extra[:3]}"
    name = next(k for k in ref if ref[k] != new[k])
    return f"tensor {name!r} is {new[name][0]} {new[name][1]}, elsewhere {ref[name][0]} {ref[name][1]}"


def _combine(
    entries: Sequence[Any],
    times: Sequence[float],
    gammas: Sequence[float],
    tensors_of: Callable[[Any], tuple[Mapping[str, torch.Tensor], str]],
    target_sigma_rel: Sequence[float] | float,
    target_t: float | None,
) -> list[dict[str, torch.Tensor]]:
    """The one reconstruction behind `reconstruct` and `reconstruct_files`: pick the snapshots at or before
    the target time, solve the least-squares weights (EDM2 App. C.2), and sum the tensors one snapshot at a
    time. `tensors_of(entry)` gives a snapshot's tensors and a label for error messages."""
    order = sorted(range(len(entries)), key=lambda i: float(times[i]))  # integer tensors: the latest wins
    sorted_t = np.array([float(times[i]) for i in order], dtype=np.float64)
    target_t, use = _select(sorted_t, target_t)
    targets = _target_gammas(target_sigma_rel)
    chosen = [i for i, u in zip(order, use, strict=True) if u]
    x = solve_weights([times[i] for i in chosen], [gammas[i] for i in chosen], target_t, targets)
    acc = _Accumulator(len(targets))
    for row, i in enumerate(chosen):
        tensors, label = tensors_of(entries[i])
        acc.add(tensors, x[row], label=label)
        del tensors  # keep peak memory at one snapshot
    return acc.result()


def reconstruct(
    snapshots: Sequence[Snapshot], target_sigma_rel: Sequence[float] | float, target_t: float | None = None
) -> list[dict[str, torch.Tensor]]:
    """EMAs with the given sigma_rel at time `target_t` (default: latest snapshot), from in-memory snapshots.

    snapshots: (t, gamma, tensors) triples, all with the same tensor names, shapes and dtypes; only those
    with t <= target_t are used. Returns one name -> tensor dict per target sigma_rel, in snapshot dtype.
    """
    return _combine(
        snapshots,
        [s[0] for s in snapshots],
        [s[1] for s in snapshots],
        lambda s: (s[2], f"at t={s[0]:g} (gamma {s[1]:.3f})"),
        target_sigma_rel,
        target_t,
    )


def reconstruct_files(
    snapshots: Sequence[SnapshotInfo],
    target_sigma_rel: Sequence[float] | float,
    target_t: float | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Like `reconstruct`, but loading snapshot files (from `list_snapshots`) one at a time.

    Peak memory is one snapshot plus one accumulator per target, whatever the number of snapshots. Filter
    the list first to reconstruct from a subset (e.g. one tracked sigma_rel only).
    """

    def load(info: SnapshotInfo) -> tuple[Mapping[str, torch.Tensor], str]:
        tensors, meta = checkpoint.load(info.path, kind=SNAPSHOT_KIND)
        if float(meta.get("t", math.nan)) != info.t or float(meta.get("gamma", math.nan)) != info.gamma:
            raise UserInputError(f"snapshot {info.path} changed while reconstructing (t or gamma differ)")
        return tensors, str(info.path)

    return _combine(
        snapshots, [s.t for s in snapshots], [s.gamma for s in snapshots], load, target_sigma_rel, target_t
    )
