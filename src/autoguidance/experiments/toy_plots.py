"""Figures 1 and 2 of the toy experiment, drawn from results.npz and metrics.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import atomic  # noqa: E402
from ..errors import UserInputError  # noqa: E402

TITLES = {
    "ground_truth": "Ground truth",
    "unguided": "Unguided",
    "cfg": "Classifier-free guidance",
    "truncation": "Naive truncation",
    "autoguidance": "Autoguidance",
}
ORANGE, GREY = "#f0a050", "#b8b8b8"


def load_results(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(out / "results.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        metrics = json.loads((out / "metrics.json").read_text())
    except FileNotFoundError as exc:
        missing = Path(exc.filename).name
        hint = "run `autoguidance toy` first"
        raise UserInputError(f"no stored toy results in {out} ({missing} missing): {hint}") from None
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"stored toy results in {out} are unreadable: {exc}") from None
    return arrays, metrics


def _outline(ax, arrays: dict, tau: float) -> None:
    """Class A (orange) and class B (grey) where their exact log density exceeds tau."""
    ext = arrays["outline_extent"]
    for key, color in (("outline_logp_b", GREY), ("outline_logp_a", ORANGE)):
        ax.contourf(
            np.linspace(ext[0], ext[1], arrays[key].shape[1]),
            np.linspace(ext[2], ext[3], arrays[key].shape[0]),
            arrays[key],
            levels=[tau, np.inf],
            colors=[color],
            alpha=0.55,
        )


def figure1(arrays: dict, metrics: dict, path: Path) -> None:
    tau = metrics["outlier_threshold_tau"]
    box = arrays["closeup_extent"]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.6), constrained_layout=True)
    for ax, name in zip(axes, TITLES, strict=True):
        _outline(ax, arrays, tau)
        pts = arrays[f"samples_{name}"]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.4, c="k", alpha=0.35, linewidths=0, rasterized=True)
        m = metrics["methods"][name]
        ax.set_title(
            f"{TITLES[name]}\noutliers {100 * m['outlier_fraction']:.1f}%   branch TV {m['branch_tv']:.3f}",
            fontsize=11,
        )
        ax.add_patch(
            plt.Rectangle((box[0], box[2]), box[1] - box[0], box[3] - box[2], fill=False, ec="r", lw=1)
        )
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    s = metrics["settings"]
    fig.suptitle(
        f"Class A (orange) vs class B (grey) of the fractal toy; {pts.shape[0]} samples each, "
        f"CFG w={s['cfg_guidance']:g}, truncation x{s['truncation']:g}, autoguidance w={s['guidance']:g}. "
        "Red box: Figure 2.",
        fontsize=11,
    )
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def _heat(ax, img: np.ndarray, ext, title: str, cmap: str, vmin: float, vmax: float):
    im = ax.imshow(img, origin="lower", extent=tuple(ext), cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


TRAJECTORY_SIGMA_MAX = 0.3  # draw only the last stretch of each path, where it settles into the close-up


def _trajectories(ax, states: np.ndarray, sigmas: np.ndarray, color: str) -> None:
    states = states[sigmas <= TRAJECTORY_SIGMA_MAX]
    for i in range(states.shape[1]):
        ax.plot(states[:, i, 0], states[:, i, 1], color=color, lw=0.7, alpha=0.8)
        ax.plot(states[-1, i, 0], states[-1, i, 1], "o", color=color, ms=2.2)


def figure2(arrays: dict, metrics: dict, path: Path) -> None:
    ext = arrays["closeup_extent"]
    sigma = float(arrays["closeup_sigma"])
    settings = metrics["settings"]
    # Model log densities are unnormalised: show each relative to its maximum in the box.
    rel = {
        k: arrays[f"closeup_logp_{k}"] - arrays[f"closeup_logp_{k}"].max() for k in ("true", "main", "guide")
    }
    ratio = arrays["closeup_logp_main"] - arrays["closeup_logp_guide"]
    ratio = ratio - np.median(ratio)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.9), constrained_layout=True)
    lo = -10.0
    im = _heat(
        axes[0],
        rel["true"],
        ext,
        f"(a) Ground truth log p(x; σ={sigma:g})\n+ unguided trajectories (σ ≤ {TRAJECTORY_SIGMA_MAX:g})",
        "magma",
        lo,
        0,
    )
    _trajectories(axes[0], arrays["trajectories_unguided"], arrays["trajectory_sigmas"], "#40c0ff")
    for ax, key, label in (
        (axes[1], "main", "(b) Main model log p₁"),
        (axes[2], "guide", "(c) Guiding model log p₀"),
    ):
        spec = settings["models"][key]
        _heat(
            ax, rel[key], ext, f"{label}\n(width {spec['width']}, {spec['iterations']} it.)", "magma", lo, 0
        )
    fig.colorbar(im, ax=axes[:3], shrink=0.8, label="log density (relative to max)")
    r = float(np.percentile(np.abs(ratio), 98))
    im2 = _heat(
        axes[3],
        ratio,
        ext,
        f"(d) log(p₁ / p₀), its gradient (arrows)\n+ autoguided trajectories (w = {settings['guidance']:g})",
        "RdBu_r",
        -r,
        r,
    )
    pts = arrays["arrow_points"]
    d = arrays["arrow_score_main"] - arrays["arrow_score_guide"]
    axes[3].quiver(
        pts[:, 0], pts[:, 1], d[:, 0], d[:, 1], color="k", alpha=0.7, angles="xy", pivot="tail", width=0.004
    )
    _trajectories(axes[3], arrays["trajectories_autoguidance"], arrays["trajectory_sigmas"], "#20a040")
    fig.colorbar(im2, ax=axes[3], shrink=0.8, label="log ratio (median 0)")
    clean = arrays["closeup_logp_clean"]
    xs = np.linspace(ext[0], ext[1], clean.shape[1])
    ys = np.linspace(ext[2], ext[3], clean.shape[0])
    tau = metrics["outlier_threshold_tau"]
    for ax, color in zip(axes, ("w", "w", "w", "k"), strict=True):
        # The clean (sigma = 0) branches, outlined where log p_A exceeds the outlier threshold.
        ax.contour(xs, ys, clean, levels=[tau], colors=color, linewidths=0.6, linestyles="--", alpha=0.8)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def draw_figures(out: str | Path) -> tuple[Path, Path]:
    """(Re)draw figure1.png and figure2.png in `out` from its stored results."""
    out = Path(out)
    arrays, metrics = load_results(out)
    figure1(arrays, metrics, out / "figure1.png")
    figure2(arrays, metrics, out / "figure2.png")
    return out / "figure1.png", out / "figure2.png"
