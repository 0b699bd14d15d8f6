"""Figure 7 in miniature: the metric against w for CFG, the guidance interval and autoguidance, with the
unguided model as a reference line."""

from __future__ import annotations

from ..sweeps.models import ModelCache
from ..sweeps.plan import Group, Plan
from .options import Options, fraction_label, product, run_label, snapshot_at, wanted
from .runs import Setup


def plan(setup: Setup, models: ModelCache, opts: Options) -> Plan:
    base = opts.base()
    s = str(setup.run("s"))
    em, eg = opts.ema_main[0], opts.ema_guide[0]
    main = {**base, "main_run": s, "main_ema": em}
    groups = []
    if wanted(opts, "none"):
        groups.append(Group("no guidance", "w", [{**main, "kind": "none"}]))
    for row, label, extra in (
        ("cfg", "CFG", {}),
        ("interval", "guidance interval", {"interval": opts.interval}),
    ):
        if wanted(opts, row):
            run = setup.run("xs-uncond")
            u = {"kind": "cfg", "uncond_run": str(run), "uncond_ema": em, **extra}
            label = f"{label} (unconditional {run_label(models, run, setup.duration)})"
            groups.append(Group(label, "w", product({**main, **u}, w=opts.ws)))
    if wanted(opts, "autoguidance"):
        xs = setup.run("xs")
        at = snapshot_at(models, xs, setup.images(opts.guide_time))
        ag = {**main, "kind": "autoguidance", "guide_run": str(xs), "guide_at": at, "guide_ema": eg}
        groups.append(
            Group(f"autoguidance (XS, {fraction_label(opts.guide_time)})", "w", product(ag, w=opts.ws))
        )
    notes = {"EMA main / guide": f"{em} / {eg}", "interval": opts.interval}
    return Plan("curves", opts.metric, groups, notes)
