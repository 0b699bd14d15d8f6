"""Section 4 in miniature: a main model degraded by dropout or by input noise, guided by the same model
degraded more, by the same kind of degradation (matched) or the other kind (mismatched)."""

from __future__ import annotations

from ..sweeps.configs import DEGRADATIONS_VERSION
from ..sweeps.models import ModelCache
from ..sweeps.plan import Group, Plan
from .options import Options, product
from .runs import Setup

DROPOUT = (0.05, 0.10)  # main, guide
NOISE = (0.10, 0.20)  # input noise raised by 10% (main) and 20% (guide)


def plan(setup: Setup, models: ModelCache, opts: Options) -> Plan:
    base = opts.base()
    s = str(setup.run("s"))
    em = opts.ema_main[0]
    model = {**base, "main_run": s, "main_ema": em}
    groups = []
    for kind, (main_v, guide_v), other in (
        ("dropout", DROPOUT, ("noise", NOISE[1])),
        ("noise", NOISE, ("dropout", DROPOUT[1])),
    ):
        panel = f"main degraded by {kind}"
        # The implementation's version joins the key: rows measured by the old one are not reused.
        degraded = {**model, f"main_{kind}": main_v, "degradations": DEGRADATIONS_VERSION}
        groups.append(Group("no guidance", "w", [{**degraded, "kind": "none"}], panel))
        guide = {**degraded, "kind": "autoguidance", "guide_run": s, "guide_ema": em}
        groups.append(
            Group(
                f"matched: guide {kind} {guide_v:g}",
                "w",
                product({**guide, f"guide_{kind}": guide_v}, w=opts.ws),
                panel,
            )
        )
        groups.append(
            Group(
                f"mismatched: guide {other[0]} {other[1]:g}",
                "w",
                product({**guide, f"guide_{other[0]}": other[1]}, w=opts.ws),
                panel,
            )
        )
    notes = {"dropout main/guide": DROPOUT, "input noise main/guide": NOISE, "EMA": em}
    return Plan("degradations", opts.metric, groups, notes)
