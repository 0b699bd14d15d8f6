"""Arrays behind the toy figures, computed once and stored in results.npz so that plots never resample.

Figure 1 needs the exact class A and class B densities on a grid (the outline). Figure 2 (a close-up,
after the paper's Figure 2) needs, at sigma = figure_sigma inside `figure_box`: the exact, main-model and
guide-model log densities, the scores that define the autoguidance direction grad log(p1 / p0), and
sampling trajectories (unguided and autoguided) that end inside the box.
"""

from __future__ import annotations

import numpy as np
import torch

from .mixture import ToyMixture

OUTLINE_EXTENT = (-1.6, 1.6, -1.6, 1.6)
OUTLINE_RES = 256
CLOSEUP_RES = 160
FIGURE9_RES = 112
FIGURE9_SAMPLES = 4096
ARROW_RES = 17
MAX_TRAJECTORIES = 48


def grid(extent, res: int) -> torch.Tensor:
    """(res * res, 2) points, row-major over y then x (so reshape(res, res) gives image rows = y)."""
    xs = torch.linspace(extent[0], extent[1], res, dtype=torch.float64)
    ys = torch.linspace(extent[2], extent[3], res, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def model_log_density(model, x: torch.Tensor, sigma: float) -> np.ndarray:
    with torch.no_grad():
        p = next(model.parameters())
        s = torch.full((len(x),), sigma, dtype=p.dtype, device=p.device)
        return model.log_density(x.to(p), s).double().cpu().numpy()


def model_score(model, x: torch.Tensor, sigma: float) -> np.ndarray:
    p = next(model.parameters())
    s = torch.full((len(x),), sigma, dtype=p.dtype, device=p.device)
    return model.score(x.to(p), s).double().cpu().numpy()


def normalised_log_density(model, x: torch.Tensor, sigma: float, cell_area: float) -> np.ndarray:
    """A model's log density on a grid, normalised so that it integrates to 1 over the grid."""
    logp = model_log_density(model, x, sigma)
    return logp - (np.logaddexp.reduce(logp) + np.log(cell_area))


def figure9_arrays(settings, models: dict, trajectories: dict, sigmas) -> dict:
    """Figure 9: at each of settings.figure9_sigmas (snapped to the nearest sampler step), the main,
    guide and unconditional models' log densities on the whole plane, and where the CFG and autoguided
    samplers' states are at that step."""
    steps = [int(torch.argmin((sigmas[:-1] - s).abs())) for s in settings.figure9_sigmas]
    g = grid(OUTLINE_EXTENT, FIGURE9_RES)
    ext = OUTLINE_EXTENT
    cell = (ext[1] - ext[0]) * (ext[3] - ext[2]) / (FIGURE9_RES - 1) ** 2
    shape = (FIGURE9_RES, FIGURE9_RES)
    out: dict[str, np.ndarray] = {"figure9_sigmas": sigmas[steps].double().numpy()}
    for name in ("main", "guide", "uncond"):
        out[f"figure9_logp_{name}"] = np.stack(
            [normalised_log_density(models[name], g, float(sigmas[i]), cell).reshape(shape) for i in steps]
        )
    for name in ("cfg", "autoguidance"):
        out[f"figure9_states_{name}"] = trajectories[name][steps, :FIGURE9_SAMPLES].double().numpy()
    return out


def figure2_arrays(settings, class_a: ToyMixture, models: dict, trajectories: dict, sigmas) -> dict:
    """trajectories: method name -> sampler states (N + 1, B, 2) of the unguided and autoguided runs."""
    main, guide = models["main"], models["guide"]
    s = settings.figure_sigma
    out: dict[str, np.ndarray] = {"outline_extent": np.array(OUTLINE_EXTENT)}
    g = grid(OUTLINE_EXTENT, OUTLINE_RES)
    class_b = ToyMixture((1,))
    out["outline_logp_a"] = class_a.log_prob(g, 0.0).numpy().reshape(OUTLINE_RES, OUTLINE_RES)
    out["outline_logp_b"] = class_b.log_prob(g, 0.0).numpy().reshape(OUTLINE_RES, OUTLINE_RES)

    box = tuple(settings.figure_box)
    out["closeup_extent"] = np.array(box)
    out["closeup_sigma"] = np.array(s)
    g = grid(box, CLOSEUP_RES)
    shape = (CLOSEUP_RES, CLOSEUP_RES)
    out["closeup_logp_true"] = class_a.log_prob(g, s).numpy().reshape(shape)
    out["closeup_logp_clean"] = class_a.log_prob(g, 0.0).numpy().reshape(shape)  # branch outline
    out["closeup_logp_main"] = model_log_density(main, g, s).reshape(shape)
    out["closeup_logp_guide"] = model_log_density(guide, g, s).reshape(shape)
    a = grid(box, ARROW_RES)
    out["arrow_points"] = a.numpy()
    out["arrow_score_main"] = model_score(main, a, s)
    out["arrow_score_guide"] = model_score(guide, a, s)
    out["arrow_score_true"] = class_a.score(a, s).numpy()

    # Trajectories of the first seeds whose final sample lands in the box.
    for name, states in trajectories.items():
        states = states.double().numpy()
        f = states[-1]
        inside = (f[:, 0] >= box[0]) & (f[:, 0] <= box[1]) & (f[:, 1] >= box[2]) & (f[:, 1] <= box[3])
        out[f"trajectories_{name}"] = states[:, np.flatnonzero(inside)[:MAX_TRAJECTORIES]]
    out["trajectory_sigmas"] = sigmas.numpy()
    return out
