"""Guided-sampling configurations and sweep files: what one point of a sweep is, as plain JSON.

A configuration is a flat dict of the fields below; its canonical JSON is its identity in the results
store. Networks are named by a training run folder (post-hoc EMA reconstructed from its snapshots at
`*_ema`, at training time `*_at` images: the guide's training time) or by a network file.

  kind          none | autoguidance | cfg | interpolation
  w             guidance weight (D_w = D_0 + w (D_1 - D_0), paper eq. 1); 1 = the main model alone
  interval      [lo, hi]: guide only for sigma_i in (lo, hi] (per sampler step), or null
  alpha         interpolation only: 0 = CFG, 1 = autoguidance (paper App. B.3)
  main_run, main_ema, main_at       the main network
  guide_run, guide_ema, guide_at    the weaker guide (autoguidance, interpolation)
  uncond_run, uncond_ema, uncond_at the unconditional guide (cfg, interpolation)
  main_dropout, guide_dropout       degradations (Section 4): fixed dropout masks where EDM2 trains
                                    with dropout (guides/weak.py)
  main_noise, guide_noise           degradations: input noise raised by this fraction (0.1 = 10%)
  degradations  the version of the degradations' implementation, set whenever one is used: 2 (guides/,
                since issue 14); rows measured by version 1 (per-layer channel masks, one noise field
                per sample hash) are kept in old stores but never taken for version 2 configurations
  steps         Heun steps; samples: images measured (seeds seed0 ... seed0 + samples - 1); seed0

A sweep file (JSON) names the sweep and gives fixed fields and a grid (or a list of grids whose products
are joined); configurations are normalised (fields that a kind does not use are dropped) and de-duplicated.

  {"name": "curves", "metric": "fd_classifier",
   "fixed": {"main_run": "runs/mnist-s", "main_ema": 0.07, "steps": 16, "samples": 1000},
   "grid": [{"kind": ["autoguidance"], "guide_run": ["runs/mnist-xs"], "w": [1, 1.5, 2, 3]},
            {"kind": ["cfg"], "uncond_run": ["runs/mnist-xs-uncond"], "w": [1.2, 1.5, 2]}]}
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import UserInputError

KINDS = ("none", "autoguidance", "cfg", "interpolation")
ROLES = ("main", "guide", "uncond")
MODEL_FIELDS = tuple(f"{r}_{p}" for r in ROLES for p in ("run", "ema", "at"))
DEGRADATION_FIELDS = ("main_dropout", "guide_dropout", "main_noise", "guide_noise")
FIELDS = (
    "kind",
    "w",
    "interval",
    "alpha",
    *MODEL_FIELDS,
    *DEGRADATION_FIELDS,
    "degradations",
    "steps",
    "samples",
    "seed0",
)
DEFAULTS: dict[str, Any] = {"kind": "autoguidance", "steps": 32, "samples": 1000, "seed0": 0}
# Which roles each kind uses.
USES = {
    "none": ("main",),
    "autoguidance": ("main", "guide"),
    "cfg": ("main", "uncond"),
    "interpolation": ("main", "guide", "uncond"),
}
SWEEP_KEYS = ("name", "metric", "fixed", "grid")
DEGRADATIONS_VERSION = 2
METRIC_DEFAULT = "fd_classifier"


def _number(name: str, value: Any, lo: float = -math.inf, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserInputError(f"{name} must be a finite number, got {value!r}")
    if integer and int(value) != value:
        raise UserInputError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise UserInputError(f"{name} must be >= {lo:g}, got {value!r}")
    return int(value) if integer else float(value)


def _path(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserInputError(
            f"{name} must be a path (a training run folder or a network file), got {value!r}"
        )
    return str(Path(value).expanduser().resolve())


def normalise(config: dict[str, Any]) -> dict[str, Any]:
    """Check a configuration and drop the fields its kind does not use; UserInputError on bad values."""
    unknown = sorted(set(config) - set(FIELDS))
    if unknown:
        raise UserInputError(f"unknown configuration keys {unknown}; known: {', '.join(FIELDS)}")
    if config.get("degradations", DEGRADATIONS_VERSION) != DEGRADATIONS_VERSION:
        raise UserInputError(f"degradations must be {DEGRADATIONS_VERSION} (this version's implementation)")
    c = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    kind = c["kind"]
    if kind not in KINDS:
        raise UserInputError(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    out: dict[str, Any] = {"kind": kind}
    for role in USES[kind]:
        if f"{role}_run" not in c:
            raise UserInputError(f"kind {kind!r} needs {role}_run (a training run folder or network file)")
        out[f"{role}_run"] = _path(c[f"{role}_run"], f"{role}_run")
        if f"{role}_ema" in c:
            out[f"{role}_ema"] = _number(f"{role}_ema", c[f"{role}_ema"], lo=1e-6)
        if f"{role}_at" in c:
            out[f"{role}_at"] = _number(f"{role}_at", c[f"{role}_at"], lo=1, integer=True)
    for role in ("main", "guide"):
        for what in ("dropout", "noise"):
            field = f"{role}_{what}"
            if field in c and role in USES[kind]:
                value = _number(field, c[field], lo=0.0)
                if what == "dropout" and value >= 1:
                    raise UserInputError(f"{field} must lie in [0, 1), got {value}")
                if value > 0:
                    out[field] = value
                    out["degradations"] = DEGRADATIONS_VERSION
    if kind != "none":
        out["w"] = _number("w", c.get("w", 1.0), lo=0.0)
        if c.get("interval") is not None:
            iv = c["interval"]
            if not isinstance(iv, (list, tuple)) or len(iv) != 2:
                raise UserInputError(f"interval must be [lo, hi] or null, got {iv!r}")
            lo, hi = (_number("interval", v, lo=0.0) for v in iv)
            if not lo < hi:
                raise UserInputError(f"interval must satisfy lo < hi, got {iv!r}")
            out["interval"] = [lo, hi]
    if kind == "interpolation":
        alpha = _number("alpha", c.get("alpha", 0.5), lo=0.0)
        if alpha > 1:
            raise UserInputError(f"alpha must lie in [0, 1], got {alpha}")
        out["alpha"] = alpha
    out["steps"] = _number("steps", c["steps"], lo=1, integer=True)
    out["samples"] = _number("samples", c["samples"], lo=1, integer=True)
    out["seed0"] = _number("seed0", c["seed0"], lo=0, integer=True)
    return out


def expand(fixed: dict[str, Any], grid: dict[str, list] | list[dict[str, list]]) -> list[dict[str, Any]]:
    """Normalised, de-duplicated configurations of fixed + each grid's product, in grid order."""
    grids = grid if isinstance(grid, list) else [grid]
    if not grids:
        raise UserInputError("empty grid: give at least one field with a list of values")
    seen: dict[str, dict[str, Any]] = {}
    for g in grids:
        if not isinstance(g, dict):
            raise UserInputError(f"a grid must be an object of field: [values], got {type(g).__name__}")
        unknown = sorted(set(g) - set(FIELDS))
        if unknown:
            raise UserInputError(f"unknown grid keys {unknown}; known: {', '.join(FIELDS)}")
        clash = sorted(set(g) & set(fixed))
        if clash:
            raise UserInputError(f"fields {clash} are both fixed and in the grid")
        for k, v in g.items():
            if not isinstance(v, list) or not v:
                raise UserInputError(f"empty grid: field {k!r} needs a non-empty list of values")
        names = list(g)
        for values in itertools.product(*(g[k] for k in names)):
            c = normalise({**fixed, **dict(zip(names, values, strict=True))})
            seen.setdefault(json.dumps(c, sort_keys=True), c)
    if not seen:
        raise UserInputError("empty grid: no configurations")
    return list(seen.values())


def read_sweep_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sweep file; returns {"name", "metric", "configs"}."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserInputError(f"sweep file {p} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read sweep file {p}: {exc}") from None
    return parse_sweep(spec, str(p))


def parse_sweep(spec: Any, source: str = "sweep") -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise UserInputError(f"{source}: a sweep must be a JSON object")
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise UserInputError(f"{source}: unknown keys {unknown}; known: {', '.join(SWEEP_KEYS)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserInputError(f'{source}: needs a "name" (the study\'s name in the store)')
    fixed = spec.get("fixed", {})
    if not isinstance(fixed, dict):
        raise UserInputError(f'{source}: "fixed" must be an object')
    unknown = sorted(set(fixed) - set(FIELDS))
    if unknown:
        raise UserInputError(f"{source}: unknown fixed keys {unknown}; known: {', '.join(FIELDS)}")
    if "grid" not in spec:
        raise UserInputError(f'{source}: needs a "grid"')
    metric = spec.get("metric", METRIC_DEFAULT)
    if not isinstance(metric, str):
        raise UserInputError(f"{source}: metric must be a name such as fd_classifier")
    return {"name": name, "metric": metric, "configs": expand(fixed, spec["grid"])}


def describe(config: dict[str, Any]) -> str:
    """A short human label: 'autoguidance w=2 ema 0.07/0.125 guide@20480'."""
    parts = [config["kind"]]
    if "w" in config:
        parts.append(f"w={config['w']:g}")
    if "alpha" in config:
        parts.append(f"alpha={config['alpha']:g}")
    if "interval" in config:
        parts.append("interval=({:g}, {:g}]".format(*config["interval"]))
    emas = [f"{config[f'{r}_ema']:g}" for r in ROLES if f"{r}_ema" in config]
    if emas:
        parts.append("ema " + "/".join(emas))
    for r in ("guide", "uncond"):
        if f"{r}_at" in config:
            parts.append(f"{r}@{config[f'{r}_at']}")
    return " ".join(parts)
