"""Figures 5 and 6 in miniature: the blend between CFG (alpha = 0) and autoguidance (alpha = 1) over w,
as metrics and as an image grid (rows alpha, columns w, the first seed)."""

from __future__ import annotations

from ..sweeps.models import ModelCache
from ..sweeps.plan import Group, Plan
from .options import Options, fraction_label, product, snapshot_at
from .runs import Setup

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def plan(setup: Setup, models: ModelCache, opts: Options) -> Plan:
    base = opts.base()
    s = str(setup.run("s"))
    em, eg = opts.ema_main[0], opts.ema_guide[0]
    xs = setup.run("xs")
    at = snapshot_at(models, xs, setup.images(opts.guide_time))
    c = {
        **base,
        "kind": "interpolation",
        "main_run": s,
        "main_ema": em,
        "guide_run": str(xs),
        "guide_at": at,
        "guide_ema": eg,
        "uncond_run": str(setup.run("xs-uncond")),
        "uncond_ema": em,
    }
    groups = [Group(f"alpha {a:g}", "w", product({**c, "alpha": a}, w=opts.ws)) for a in ALPHAS]
    notes = {
        "guide": f"XS at {fraction_label(opts.guide_time)}",
        "image_grid": {"rows": "alpha", "columns": "w"},
    }
    return Plan("interpolation", opts.metric, groups, notes)
