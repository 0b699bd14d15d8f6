"""Figures 1 and 2 of the toy experiment, drawn from results.npz and metrics.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import UserInputError  # noqa: E402
from ..io import atomic  # noqa: E402

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
    fig, axes = plt.subplots(1, 5, figsize=(20, 5.0), constrained_layout=True)
    for ax, name in zip(axes, TITLES, strict=True):
        _outline(ax, arrays, tau)
        pts = arrays[f"samples_{name}"]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.4, c="k", alpha=0.35, linewidths=0, rasterized=True)
        m = metrics["methods"][name]
        ax.set_title(
            f"{TITLES[name]}: outliers {100 * m['outlier_fraction']:.1f}%, branch TV {m['branch_tv']:.3f}\n"
            f"depth TV {m['depth_tv']:.3f}, outer depth x{m['outer_depth_ratio']:.2f}, "
            f"recall {m['recall']:.2f}",
            fontsize=10.5,
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
        "Red box: Figure 2.\nOuter depth: sample mass on the outermost branches / true mass; "
        "recall: share of exact samples with a generated one within their 5-NN radius.",
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


FIGURE9_FLOOR = -12.0  # log-density colour range below each panel's maximum


def figure9(arrays: dict, metrics: dict, path: Path) -> None:
    """Paper Figure 9: the densities implied during sampling. Rows: noise levels, high to low. Columns:
    the main model p1 (shared), then for CFG and for autoguidance the guide p0, the ratio p1/p0 that
    guidance amplifies, and the guided density p1 (p1/p0)^(w-1) with the sampler's states at that sigma."""
    s = metrics["settings"]
    ext = tuple(arrays["outline_extent"])
    lp = {k: arrays[f"figure9_logp_{k}"] for k in ("main", "guide", "uncond")}
    sig = arrays["figure9_sigmas"]
    rows = len(sig)
    fig, axes = plt.subplots(rows, 7, figsize=(20, 2.95 * rows + 1.2), constrained_layout=True)
    im = im_ratio = None
    heads = [
        "main model p₁\n(class A, the model guided)",
        "CFG guide p₀\n(unconditional: classes A + B)",
        "CFG ratio log(p₁/p₀)",
        f"CFG guided, w = {s['cfg_guidance']:g}\np₁ (p₁/p₀)^(w-1) + samples",
        f"autoguidance guide p₀\n(class A, {_guide_words(s['models'])})",
        "autoguidance ratio log(p₁/p₀)",
        f"autoguided, w = {s['guidance']:g}\np₁ (p₁/p₀)^(w-1) + samples",
    ]
    for r in range(rows):
        for c, (ax, panel) in enumerate(zip(axes[r], _figure9_panels(lp, r, s), strict=True)):
            drawn = _figure9_panel(ax, *panel, arrays, r, ext)
            im_ratio, im = (drawn, im) if panel[0] == "ratio" else (im_ratio, drawn)
            if r == 0:
                ax.set_title(heads[c], fontsize=9.5)
            if c == 0:
                ax.set_ylabel(f"σ = {sig[r]:.3g}", fontsize=12)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 6], shrink=0.4, label="log density − panel max (nats)")
    fig.colorbar(
        im_ratio, ax=axes[:, 6], shrink=0.4, ticks=[], label="log(p₁/p₀) − median: blue low, red high"
    )
    fig.suptitle(
        "Figure 9: densities implied during sampling, rows from high to low noise level σ (the sampler step "
        "nearest to each requested σ).\nRed in the ratio: where the main model is more confident than the "
        "guide; guidance multiplies the density there. Cyan dots: the sampler's states at that σ.",
        fontsize=11,
    )
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)


def _figure9_panels(lp: dict, r: int, s: dict) -> list[tuple]:
    """Row r's panels as (kind, image, method or colour limit): the main density, then for CFG and for
    autoguidance the guide's density, the ratio and the guided density. Ratios are shown about their
    median over the main model's support (where it is within the colour floor of its maximum), clipped at
    their 99th percentile there: far from the data they run to hundreds of nats and would wash out the
    part that steers the samples."""
    main = lp["main"][r]
    support = main >= main.max() + FIGURE9_FLOOR
    ratios = {k: main - lp[k][r] for k in ("uncond", "guide")}
    ratios = {k: v - np.median(v[support]) for k, v in ratios.items()}
    lims = {k: float(np.percentile(np.abs(v[support]), 99)) for k, v in ratios.items()}
    panels = [("density", main, None)]
    guides = (("uncond", "cfg", s["cfg_guidance"]), ("guide", "autoguidance", s["guidance"]))
    for guide_key, method, w in guides:
        panels += [
            ("density", lp[guide_key][r], None),
            ("ratio", ratios[guide_key], lims[guide_key]),
            ("density", main + (w - 1) * ratios[guide_key], method),
        ]
    return panels


def _figure9_panel(ax, kind: str, img, extra, arrays: dict, r: int, ext: tuple):
    """Draw one panel of Figure 9; a guided density gets the sampler's states at that sigma on top."""
    if kind == "ratio":
        im = ax.imshow(img, origin="lower", extent=ext, cmap="RdBu_r", vmin=-extra, vmax=extra)
        ax.text(0.03, 0.03, f"colour range ±{extra:.2g} nats", transform=ax.transAxes, fontsize=8)
        return im
    im = ax.imshow(img - img.max(), origin="lower", extent=ext, cmap="magma", vmin=FIGURE9_FLOOR, vmax=0)
    if extra is not None:
        pts = arrays[f"figure9_states_{extra}"][r]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.3, c="#40e0ff", alpha=0.5, linewidths=0, rasterized=True)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
    return im


def draw_figures(out: str | Path) -> tuple[Path, ...]:
    """(Re)draw figure1.png, figure2.png and figure9.png in `out` from its stored results."""
    out = Path(out)
    arrays, metrics = load_results(out)
    figure1(arrays, metrics, out / "figure1.png")
    figure2(arrays, metrics, out / "figure2.png")
    paths = [out / "figure1.png", out / "figure2.png"]
    if "figure9_sigmas" in arrays:
        figure9(arrays, metrics, out / "figure9.png")
        paths.append(out / "figure9.png")
    return tuple(paths)


FRONT_COLORS = {"autoguidance": "#20a040", "cfg": "#d04040", "truncation": "#4060d0"}


def _guide_words(models: dict) -> str:
    """How the autoguidance guide is weaker than the main model, from their training settings."""
    main, guide = models["main"], models["guide"]
    words = []
    if guide["width"] < main["width"]:
        words.append(f"width {guide['width']}")
    if guide["iterations"] < main["iterations"]:
        words.append(f"{guide['iterations']} of {main['iterations']} it.")
    return ", ".join(words) or "as trained as the main model"


def draw_front(result: dict, path: Path) -> None:
    """The trade-off front of the w sweep: outliers against branch TV (lost or reshuffled branches), depth
    TV (where mass goes) and missed exact samples (1 - recall), one curve per method, w written along."""
    fig, axes = plt.subplots(1, 3, figsize=(19, 6), layout="constrained")
    panels = (
        ("branch_tv", "branch TV (lost or reshuffled branches)"),
        ("depth_tv", "depth TV (mass moved between branch depths)"),
        ("missed", "1 - recall (exact samples with no generated one near)"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):

        def value(p, key=key):
            return 1.0 - p["recall"] if key == "missed" else p[key]

        for method, curve in result["curves"].items():
            xs = [value(p) for p in curve]
            ys = [100 * p["outlier_fraction"] for p in curve]
            ax.plot(xs, ys, "o-", color=FRONT_COLORS.get(method), label=TITLES.get(method, method), ms=4)
            for p, x, y in zip(curve, xs, ys, strict=True):
                if p["w"] != 1.0:
                    ax.annotate(
                        f"{p['w']:g}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 3),
                        fontsize=8,
                        color=FRONT_COLORS.get(method),
                    )
        gt = result["ground_truth"]
        ax.plot([value(gt)], [100 * gt["outlier_fraction"]], "k*", ms=11, label="ground truth (exact)")
        u = result["unguided"]
        ax.plot([value(u)], [100 * u["outlier_fraction"]], "ks", ms=7, mfc="none", label="unguided (w = 1)")
        ax.set_xlabel(label)
        ax.set_ylabel("outliers (% of samples below the 1% density quantile)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9)
    s = result["settings"]
    guide = s["models"]["guide"]
    fig.suptitle(
        "Toy trade-off front over guidance strength w (numbers along the curves; truncation's: its score "
        f"scale). Lower left is better.\n{s['samples']} samples per point, recipe {s['recipe']}, "
        f"model seed {s['model_seed']}; "
        f"autoguidance guide: width {guide['width']}, {guide['iterations']} iterations, "
        f"EMA sigma_rel {guide['ema_sigma_rel']:g}" + (" (QUICK: NOT MEANINGFUL)" if s.get("quick") else ""),
        fontsize=10,
    )
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
