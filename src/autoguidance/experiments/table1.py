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
COND, UNCOND = "class-conditional", "unconditional"  # the panels


def plan(setup: Setup, models: ModelCache, opts: Options) -> Plan:
    T, t_guide = setup.duration, setup.images(opts.guide_time)
    notes = {
        "T (main model training images)": T,
        "guide training time": f"{fraction_label(opts.guide_time)} = {t_guide}",
    }
    groups: list[Group] = []
    if any(wanted(opts, r) for r in COND_ROWS):
        main = {**opts.base(), "main_run": str(setup.run("s"))}
        groups += _unguided_and_cfg(setup, models, opts, main)
        groups += _autoguidance(setup, models, opts, main)
        groups += _ablations(setup, models, opts, main, notes)
    groups += _unconditional(setup, models, opts)
    return Plan("table1", opts.metric, groups, notes)


def _unguided_and_cfg(setup: Setup, models: ModelCache, opts: Options, main: dict) -> list[Group]:
    groups = []
    if wanted(opts, "none"):
        configs = product({**main, "kind": "none"}, main_ema=opts.ema_main)
        groups.append(Group("no guidance", "main_ema", configs, COND))
    for row, label, extra in (
        ("cfg", "CFG", {}),
        ("interval", "guidance interval", {"interval": opts.interval}),
    ):
        if wanted(opts, row):
            u = str(setup.run("xs-uncond"))
            label = f"{label} (unconditional {run_label(models, u, setup.duration)})"
            cfg = {**main, **extra, "kind": "cfg", "uncond_run": u}
            grid = product(cfg, w=opts.ws, main_ema=opts.ema_main)
            # The paper's CFG: the unconditional model at the main model's EMA length.
            configs = [{**c, "uncond_ema": c["main_ema"]} for c in grid]
            groups.append(Group(label, "w", configs, COND))
    return groups


def _autoguidance(setup: Setup, models: ModelCache, opts: Options, main: dict) -> list[Group]:
    """Autoguidance (XS guide at the guide time), and the ablation with one EMA length for both."""
    if not (wanted(opts, "autoguidance") or wanted(opts, "same-ema")):
        return []
    xs = setup.run("xs")
    at = snapshot_at(models, xs, setup.images(opts.guide_time))
    ag = {**main, "kind": "autoguidance", "guide_run": str(xs), "guide_at": at}
    groups = []
    if wanted(opts, "autoguidance"):
        configs = product(ag, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide)
        label = "autoguidance (XS guide, " + fraction_label(opts.guide_time) + ")"
        groups.append(Group(label, "w", configs, COND))
    if wanted(opts, "same-ema"):
        same = [{**c, "guide_ema": c["main_ema"]} for c in product(ag, w=opts.ws, main_ema=opts.ema_main)]
        groups.append(Group("same EMA for both models", "w", same, COND))
    return groups


def _ablations(setup: Setup, models: ModelCache, opts: Options, main: dict, notes: dict) -> list[Group]:
    """Reduced training only (the main model's own early snapshot) and reduced capacity only (XS at T)."""
    groups = []
    if wanted(opts, "reduced-training"):
        s = main["main_run"]
        at = nearest_snapshot(models, s, setup.images(opts.guide_time))
        notes["reduced training only: S guide at"] = (
            f"{at} images (T/{setup.duration / at:.3g}, its snapshot nearest the guide time)"
        )
        rt = {**main, "kind": "autoguidance", "guide_run": s, "guide_at": at}
        configs = product(rt, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide)
        groups.append(Group("reduced training only (S guide)", "w", configs, COND))
    if wanted(opts, "reduced-capacity"):
        full = setup.run("xs-full")
        rc = {**main, "kind": "autoguidance", "guide_run": str(full)}
        configs = product(rc, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide)
        label = f"reduced capacity only ({run_label(models, full, setup.duration)} guide)"
        groups.append(Group(label, "w", configs, COND))
    return groups


def _unconditional(setup: Setup, models: ModelCache, opts: Options) -> list[Group]:
    if not (wanted(opts, "uncond-none") or wanted(opts, "uncond-autoguidance")):
        return []
    umain = {**opts.base(), "main_run": str(setup.run("s-uncond"))}
    groups = []
    if wanted(opts, "uncond-none"):
        configs = product({**umain, "kind": "none"}, main_ema=opts.ema_main)
        groups.append(Group("no guidance", "main_ema", configs, UNCOND))
    if wanted(opts, "uncond-autoguidance"):
        g = setup.run("xs-uncond-g")
        ua = {**umain, "kind": "autoguidance", "guide_run": str(g)}
        configs = product(ua, w=opts.ws, main_ema=opts.ema_main, guide_ema=opts.ema_guide)
        label = f"autoguidance ({run_label(models, g, setup.duration)} guide)"
        groups.append(Group(label, "w", configs, UNCOND))
    return groups
