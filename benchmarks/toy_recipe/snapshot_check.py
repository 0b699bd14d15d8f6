"""Is the recommended guide the main run's own EMA at iteration 512? Train the main config (seed 0) for
520 iterations, keep the EMA's tensors right after the update at t = 512, and compare them bit for bit with
the separately trained guide (research cache). Writes benchmarks/results/toy_recipe/snapshot_check.json."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lib  # noqa: E402
import torch  # noqa: E402

import autoguidance.toy.train as train  # noqa: E402

snap = {}


class Snap(train.PowerFunctionEMA):
    def update(self, model, cur_t, delta_t):
        super().update(model, cur_t, delta_t)
        if cur_t == 512:
            snap.update({k: v.detach().clone() for k, v in self.ema_tensors(0).items()})


def main() -> None:
    train.PowerFunctionEMA = Snap
    main_cfg = lib.main_cfg(0, iterations=4096, batch=4096)
    guide_cfg = lib.guide_cfg(0, width=64, iterations=512, batch=4096, same_seed=True)
    assert replace(main_cfg, iterations=512) == guide_cfg
    train.train_toy_model(replace(main_cfg, iterations=520))
    guide, _ = lib.get_model(guide_cfg)
    sd = guide.state_dict()
    same = {k: bool(torch.equal(sd[k], snap[k])) for k in sd}
    lib.atomic.write_json(
        lib.RESULTS / "snapshot_check.json", {"tensors_identical": same, "all": all(same.values())}
    )
    print(same)


if __name__ == "__main__":
    main()
