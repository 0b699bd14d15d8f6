"""Table 1 in miniature: no guidance, CFG, the guidance interval, autoguidance, and the ablations (same EMA
for both models, reduced training only, reduced capacity only), class-conditional and unconditional, each
row at its best settings over the swept w and EMA lengths (autoguidance paper, Table 1)."""

from __future__ import annotations

from ..sweeps.models import ModelCache
from ..sweeps.plan import Group, Plan
from .options import Options, fraction_label, nearest_snapshot, product, run_label, snapshot_at, wanted
from .runs import Setup

COND_ROWS = ("none", "cfg", "interval", "autoguidance", "same-ema", "reduced-training", "reduced-capacity")
ROWS = (*COND_ROWS, "uncond-none", "uncond-autoguidance")


def plan(setup: Setup, models: ModelCache, opts: Options) -> Plan:
    base = opts.base()
    T = setup.duration
    t_guide = setup.images(opts.guide_time)
    groups: list[Group] = []
    notes = {
        "T (main model training images)": T,
        "guide training time": f"{fraction_label(opts.guide_time)} = {t_guide}",
    }
    cond = "class-conditional"
    if any(wanted(opts, r) for r in COND_ROWS):
        s = str(setup.run("s"))
        main = {**base, "main_run": s}
    if wanted(opts, "none"):
        groups.append(
            Group("no guidance", "main_ema", product({**main, "kind": "none"}, main_ema=opts.ema_main), cond)
        )
    for row, label, extra in (
        ("cfg", "CFG", {}),
        ("interval", "guidance interval", {"interval": opts.interval}),
    ):
        if wanted(opts, row):
            u = str(setup.run("xs-uncond"))
            label = f"{label} (unconditional {run_label(models, u, T)})"
            configs = [
                {
                    **c,
                    "uncond_ema": c["main_ema"],
                }  # the paper's CFG: the unconditional model at the main's EMA
                for c in product(
                    {**main, **extra, "kind": "cfg", "uncond_run": u}, w=opts.ws, main_ema=opts.ema_main
                )
            ]
            groups.append(Group(label, "w", configs, cond))
    if wanted(opts, "autoguidance") or wanted(opts, "same-ema"):
        xs = setup.run("xs")
        at = snapshot_at(models, xs, t_guide)
        ag = {**main, "kind": "autoguidance", "guide_run": str(xs), "guide_at": at}
        if wanted(opts, "autoguidance"):
            groups.append(
                Group(
                    "autoguidance (XS guide, " + fraction_label(opts.guide_time) + ")",
                    "w",
                    product(ag, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide),
                    cond,
                )
            )
        if wanted(opts, "same-ema"):
            same = [{**c, "guide_ema": c["main_ema"]} for c in product(ag, w=opts.ws, main_ema=opts.ema_main)]
            groups.append(Group("same EMA for both models", "w", same, cond))
    if wanted(opts, "reduced-training"):
        at = nearest_snapshot(models, s, setup.images(opts.guide_time))
        notes["reduced training only: S guide at"] = (
            f"{at} images (T/{T / at:.3g}, its snapshot nearest the guide time)"
        )
        rt = {**main, "kind": "autoguidance", "guide_run": s, "guide_at": at}
        groups.append(
            Group(
                "reduced training only (S guide)",
                "w",
                product(rt, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide),
                cond,
            )
        )
    if wanted(opts, "reduced-capacity"):
        full = setup.run("xs-full")
        rc = {**main, "kind": "autoguidance", "guide_run": str(full)}
        groups.append(
            Group(
                f"reduced capacity only ({run_label(models, full, T)} guide)",
                "w",
                product(rc, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide),
                cond,
            )
        )
    if wanted(opts, "uncond-none") or wanted(opts, "uncond-autoguidance"):
        su = str(setup.run("s-uncond"))
        umain = {**base, "main_run": su}
        if wanted(opts, "uncond-none"):
            groups.append(
                Group(
                    "no guidance",
                    "main_ema",
                    product({**umain, "kind": "none"}, main_ema=opts.ema_main),
                    "unconditional",
                )
            )
        if wanted(opts, "uncond-autoguidance"):
            g = setup.run("xs-uncond-g")
            ua = {**umain, "kind": "autoguidance", "guide_run": str(g)}
            groups.append(
                Group(
                    f"autoguidance ({run_label(models, g, T)} guide)",
                    "w",
                    product(ua, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide),
                    "unconditional",
                )
            )
    return Plan("table1", opts.metric, groups, notes)
