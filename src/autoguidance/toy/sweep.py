"""The guidance-strength sweep of the toy: exact outliers, branch TV, depth TV and recall against w for
autoguidance, CFG and naive truncation (its strength is its score scale, swept on its own finer grid
since its effect sets in near 1), on the same models and the same initial noise, written to sweep.json
and drawn as the trade-off front (front.png).

At w = 1 every method is the unguided main model, so that point is sampled once and shared.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserInputError
from ..guidance import check_weight
from ..io import atomic
from ..sampling import edm_sigmas, sample
from ..seeds import SeedStreams
from .experiment import ToySettings, guided_denoisers, initial_latents, load_models
from .metrics import RecallReference, outlier_threshold, toy_metrics
from .mixture import ToyMixture

SWEEP_METHODS = ("autoguidance", "cfg", "truncation")
DEFAULT_WEIGHTS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
DEFAULT_TRUNCATION_SCALES = (1.0, 1.02, 1.04, 1.06, 1.08, 1.1, 1.15, 1.25, 1.5)
COMPARED = ("depth_tv", "recall", "branch_tv", "outer_depth_ratio")


def parse_weights(text: str, name: str = "weights") -> tuple[float, ...]:
    """'1,1.5,2' -> (1.0, 1.5, 2.0); UserInputError unless every entry is a finite number >= 1."""
    try:
        weights = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise UserInputError(f"{name} must be numbers separated by commas, got {text!r}") from None
    for w in weights:
        check_weight(w, name)
        if w < 1:
            raise UserInputError(f"{name} must be >= 1 (1 = unguided), got {w:g}")
    return tuple(sorted(set(weights)))


def run_sweep(
    settings: ToySettings,
    out: str | Path,
    weights: tuple[float, ...] = DEFAULT_WEIGHTS,
    retrain: bool = False,
    progress: bool = True,
    methods: tuple[str, ...] = SWEEP_METHODS,
    truncation_scales: tuple[float, ...] = DEFAULT_TRUNCATION_SCALES,
) -> dict:
    """Sample every method at every weight (truncation at its scales); returns the sweep dict (also
    written to out/sweep.json)."""
    out = Path(out)
    timings: dict[str, float] = {}
    models, model_summary = load_models(settings, out, retrain, progress, timings)
    class_a = ToyMixture((0,))
    sigmas = edm_sigmas(settings.num_steps, settings.sigma_min, settings.sigma_max, settings.rho)
    seeds = range(settings.seed, settings.seed + settings.samples)
    latents = initial_latents(class_a, seeds, settings.sigma_max).to(settings.device)
    tau = outlier_threshold(class_a, settings.tau_samples, settings.tau_seed)
    reference = RecallReference.build(class_a, settings.recall_samples, settings.recall_seed)

    def measure(method: str, w: float) -> dict:
        x = sample(guided_denoisers(models, method, w), latents, sigmas, solver="heun")
        return {"w": w, **toy_metrics(class_a, x.detach().cpu().double(), tau, reference).to_dict()}

    start = time.perf_counter()
    truth = class_a.sample_seeded(SeedStreams(seeds)).double()
    unguided = measure("unguided", 1.0)
    curves: dict[str, list[dict]] = {m: [] for m in methods}
    jobs = [(m, w) for m in methods for w in (truncation_scales if m == "truncation" else weights)]
    for method, w in tqdm(jobs, desc="sweep", disable=None if progress else True, leave=False):
        curves[method].append(unguided if w == 1.0 else measure(method, w))
    timings["sweep"] = time.perf_counter() - start
    result = {
        "curves": curves,
        "at_equal_outliers": at_equal_outliers(curves),
        "unguided": unguided,
        "ground_truth": toy_metrics(class_a, truth, tau, reference).to_dict(),
        "models": model_summary,
        "outlier_threshold_tau": tau,
        "settings": settings.to_dict(),
        "timings": timings,
    }
    if settings.quick:
        from .experiment import QUICK_NOTE

        result["note"] = QUICK_NOTE
    atomic.write_json(out / "sweep.json", result)
    from .figures import draw_front

    draw_front(result, out / "front.png")
    return result


def front_table(result: dict) -> str:
    rows = [f"{'method':<14}{'w':>6}{'outliers':>10}{'branch_tv':>11}{'depth_tv':>10}{'recall':>8}"]
    for method, curve in result["curves"].items():
        for p in curve:
            rows.append(
                f"{method:<14}{p['w']:>6.2f}{p['outlier_fraction']:>10.4f}{p['branch_tv']:>11.3f}"
                f"{p['depth_tv']:>10.3f}{p['recall']:>8.3f}"
            )
    return "\n".join(rows)


def _interpolate(curve: list[dict], outliers: float) -> dict | None:
    """The metrics where a method's curve (in order of strength) first comes down to `outliers`,
    linearly interpolated between its two neighbouring points; None if it never gets that low."""
    for a, b in zip(curve, curve[1:], strict=False):
        ya, yb = a["outlier_fraction"], b["outlier_fraction"]
        if min(ya, yb) <= outliers <= max(ya, yb):
            t = 0.0 if ya == yb else (outliers - ya) / (yb - ya)
            return {k: a[k] + t * (b[k] - a[k]) for k in ("w", *COMPARED)}
    return None


def at_equal_outliers(curves: dict[str, list[dict]]) -> list[dict]:
    """For each autoguidance point: what CFG and truncation need to reach the same outlier fraction (their
    strength and metrics there), to read the fronts in (outliers, X) for every X at once. A method that
    never gets that few outliers is None: there autoguidance's front beats it on every axis."""
    rows = []
    for point in curves.get("autoguidance", []):
        if point["w"] == 1.0:
            continue
        row = {"outliers": point["outlier_fraction"], "autoguidance": {k: point[k] for k in ("w", *COMPARED)}}
        for method in ("cfg", "truncation"):
            if method in curves:
                row[method] = _interpolate(curves[method], point["outlier_fraction"])
        rows.append(row)
    return rows


def comparison_table(result: dict) -> str:
    """at_equal_outliers as text: per autoguidance w, depth TV / recall / branch TV of each method."""
    header = f"{'outliers':>9}  {'method':<13}{'strength':>9}{'depth_tv':>10}{'recall':>8}{'branch_tv':>11}"
    rows = [header]
    for row in result.get("at_equal_outliers", []):
        for method in SWEEP_METHODS:
            if method not in row:
                continue
            m, head = row[method], f"{row['outliers']:>9.4f}  {method:<13}"
            if m is None:
                rows.append(head + "   never this few outliers")
                continue
            rows.append(
                head + f"{m['w']:>9.3f}{m['depth_tv']:>10.3f}{m['recall']:>8.3f}{m['branch_tv']:>11.3f}"
            )
    return "\n".join(rows)
