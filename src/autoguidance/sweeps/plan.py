"""An experiment as data: groups of configurations (a curve, a table row), run as one sweep in the store.

The plan itself is saved in the store beside its results (the study's user attribute "plan"), so that
its tables and figures are redrawn from the store alone, without the options that made it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import UserInputError
from ..images import make_grid
from .measure import direction_of
from .store import ResultStore, _optuna, canonical_key
from .worker import SweepResult, run_sweep

THUMBNAILS = 10  # images kept per configuration (the first seeds), for image grids redrawn from the store


@dataclass
class Group:
    """One curve or table row: configurations that differ along `x` (a configuration field)."""

    label: str
    x: str
    configs: list[dict[str, Any]]
    panel: str = ""  # configurations of one panel are drawn in one plot


@dataclass
class Plan:
    name: str  # the experiment (table1, sensitivity, ...) and its study's name
    metric: str
    groups: list[Group]
    notes: dict[str, Any] = field(default_factory=dict)  # what the reader should know: models, fractions

    def configs(self) -> list[dict[str, Any]]:
        """Every configuration once, in group order (so a worker reuses loaded models along a group)."""
        seen: dict[str, dict[str, Any]] = {}
        for g in self.groups:
            for c in g.configs:
                seen.setdefault(canonical_key(c), c)
        if not seen:
            raise UserInputError(f"experiment {self.name!r} has no configurations (an empty grid?)")
        return list(seen.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "groups": [asdict(g) for g in self.groups],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(d["name"], d["metric"], [Group(**g) for g in d["groups"]], d.get("notes", {}))


def thumbnails(images: torch.Tensor) -> str:
    """The first THUMBNAILS images as one PNG strip, base64: small enough to keep in the store."""
    row = make_grid(images[:THUMBNAILS][None], pad=0)
    buf = io.BytesIO()
    Image.fromarray(row[:, :, 0] if row.shape[2] == 1 else row).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def read_thumbnails(text: str) -> np.ndarray:
    """(K, H, W, C) uint8 from `thumbnails`' strip (square images side by side)."""
    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))
    if strip.ndim == 2:
        strip = strip[:, :, None]
    h = strip.shape[0]
    return np.stack([strip[:, i : i + h] for i in range(0, strip.shape[1], h)])


def merge_plans(old: Plan, new: Plan) -> Plan:
    """The union of two runs of one experiment (say, other rows or more w later): groups matched by
    panel and label, their configurations joined in order, new groups appended."""
    groups = [Group(g.label, g.x, list(g.configs), g.panel) for g in old.groups]
    index = {(g.panel, g.label): g for g in groups}
    for g in new.groups:
        if (g.panel, g.label) not in index:
            index[(g.panel, g.label)] = Group(g.label, g.x, [], g.panel)
            groups.append(index[(g.panel, g.label)])
        have = index[(g.panel, g.label)]
        keys = {canonical_key(c) for c in have.configs}
        have.configs += [c for c in g.configs if canonical_key(c) not in keys]
    return Plan(new.name, new.metric, groups, {**old.notes, **new.notes})


def save_plan(store: ResultStore, plan: Plan) -> Plan:
    """Store the plan, joined with the one already stored under its name; returns what was stored."""
    study = store.study(plan.name, direction_of(plan.metric))
    if "plan" in study.user_attrs:
        old = Plan.from_json(study.user_attrs["plan"])
        if old.metric != plan.metric:
            raise UserInputError(
                f"experiment {plan.name!r} in {store.url} measures {old.metric}, not {plan.metric}: "
                "use another store"
            )
        plan = merge_plans(old, plan)
    study.set_user_attr("plan", plan.to_json())
    return plan


def load_plan(store: ResultStore, name: str) -> Plan:
    optuna = _optuna()
    if not store.has_study(name):
        raise UserInputError(
            f"no experiment {name!r} in {store.url}; it holds {store.study_names() or 'none'}"
        )
    study = optuna.load_study(study_name=name, storage=store.storage)
    if "plan" not in study.user_attrs:
        raise UserInputError(f"study {name!r} in {store.url} is not an experiment (no plan stored)")
    return Plan.from_json(study.user_attrs["plan"])


def run_plan(store: ResultStore, plan: Plan, evaluate, *, wait: bool = True, on_result=None) -> SweepResult:
    """Save the plan (joined with a stored one of the same name) and measure the configurations of this
    plan not yet in the store (resumable, shareable)."""
    save_plan(store, plan)
    return run_sweep(
        store,
        plan.name,
        plan.configs(),
        evaluate,
        plan.metric,
        direction=direction_of(plan.metric),
        wait=wait,
        on_result=on_result,
    )
