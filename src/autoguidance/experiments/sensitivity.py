"""Figure 3 in miniature: the metric against w for guides trained from T/32 to T/2, for guide capacities
xxs, xs and s (at the same training time), and against each model's EMA length at a fixed w."""

from __future__ import annotations

from fractions import Fraction

from ..sweeps.models import ModelCache
from ..sweeps.plan import Group, Plan
from .options import Options, fraction_label, nearest_snapshot, product, snapshot_at, wanted
from .runs import Setup

TIMES = (Fraction(1, 32), Fraction(1, 16), Fraction(1, 8), Fraction(1, 4), Fraction(1, 2))
EMAS = (0.03, 0.05, 0.07, 0.1, 0.125, 0.15, 0.2)


def plan(setup: Setup, models: ModelCache, opts: Options, w_ema: float = 2.0) -> Plan:
    base = opts.base()
    s = str(setup.run("s"))
    em, eg = opts.ema_main[0], opts.ema_guide[0]
    main = {**base, "main_run": s, "kind": "autoguidance"}
    groups, skipped = [], []
    if wanted(opts, "time"):
        xs = setup.run("xs")
        have = models.snapshot_times(xs)
        for f in TIMES:
            t = setup.images(f)
            if t not in have:
                skipped.append(f"guide at {fraction_label(f)} ({t} images): no snapshot in {xs}")
                continue
            c = {**main, "main_ema": em, "guide_run": str(xs), "guide_at": t, "guide_ema": eg}
            groups.append(
                Group(f"XS guide at {fraction_label(f)}", "w", product(c, w=opts.ws), "guide training time")
            )
    if wanted(opts, "capacity"):
        t = setup.images(opts.guide_time)
        for preset, name in (("xxs", "xxs"), ("xs", "xs"), ("s", "s")):
            run = setup.run(name)
            # The main model's own snapshots need not fall on T/2^k (the catalog's s: every T/20): its
            # nearest one stands in, named by its own time, as table1's "reduced training only" does.
            at = nearest_snapshot(models, run, t)
            c = {**main, "main_ema": em, "guide_run": str(run), "guide_at": at, "guide_ema": eg}
            label = f"{preset.upper()} guide at {fraction_label(Fraction(at, setup.duration))}"
            groups.append(Group(label, "w", product(c, w=opts.ws), "guide capacity"))
    if wanted(opts, "ema"):
        xs = setup.run("xs")
        at = snapshot_at(models, xs, setup.images(opts.guide_time))
        c = {**main, "w": w_ema, "guide_run": str(xs), "guide_at": at}
        groups.append(
            Group(
                f"main EMA (guide {eg}, w {w_ema:g})",
                "main_ema",
                product({**c, "guide_ema": eg}, main_ema=list(EMAS)),
                "EMA length",
            )
        )
        groups.append(
            Group(
                f"guide EMA (main {em}, w {w_ema:g})",
                "guide_ema",
                product({**c, "main_ema": em}, guide_ema=list(EMAS)),
                "EMA length",
            )
        )
    notes = {"T": setup.duration, "skipped": skipped} if skipped else {"T": setup.duration}
    return Plan("sensitivity", opts.metric, groups, notes)
