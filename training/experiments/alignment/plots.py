"""Figures 2, 5, 6, 7 and 8 of the paper from the test-set arrays (matplotlib, Agg backend).

``arrays`` maps ``"d{dim}/{name}"`` and ``"d{dim}/{model}/{name}"`` to numpy arrays (the contents
of ``scores.npz``); a model or dimension that was not run, or whose every trial failed, is drawn
as an empty panel that says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from training.experiments.alignment.mixture import AsymmetricGaussianMixture  # noqa: E402
from training.experiments.alignment.report import ResultRow  # noqa: E402
from training.experiments.alignment.space import FLOW_NAMES, AlignmentConfig  # noqa: E402

BASE_STD = math.sqrt(0.5)  # the flows' base is N(c, ½ I)
DPI = 90


def _missing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _true_density_contours(ax: Axes, x: np.ndarray) -> None:
    """Contours of the exact 2-D mixture density over the range of ``x``."""
    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
    grid = torch.from_numpy(np.stack([g0.ravel(), g1.ravel()], axis=1))
    density = AsymmetricGaussianMixture(2).log_prob(grid).exp().numpy().reshape(g0.shape)
    ax.contour(g0, g1, density, levels=6, colors="k", linewidths=0.5, alpha=0.6)


def _circles(ax: Axes, center: np.ndarray, radii: list[float]) -> None:
    for radius in radii:
        ax.add_patch(plt.Circle(tuple(center), radius, fill=False, ls="--", lw=0.8, color="k"))


def _scatter(ax: Axes, points: np.ndarray, colour: np.ndarray, norm: Normalize, cmap: str = "viridis"):  # noqa: ANN202
    return ax.scatter(points[:, 0], points[:, 1], c=colour, s=3, cmap=cmap, norm=norm, rasterized=True)


def figure_latent_2d(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Figure 2: data and the three latent spaces in 2-D, colour = true density.

    Dashed: the 99th percentile of ‖ω(x) - c‖ on the test sample (Deep SVDD) or the base
    contours at 1σ, 2σ, 3σ (flows).
    """
    density = np.exp(arrays["d2/true_log_prob"])
    norm = Normalize(density.min(), density.max())
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), layout="constrained")
    points = _scatter(axes[0], arrays["d2/x"], density, norm)
    _true_density_contours(axes[0], arrays["d2/x"])
    axes[0].set_title("(a) data, true density")
    for ax, model, label in zip(axes[1:], ("DeepSVDD", "NonUSFlow", "USFlow"), "bcd", strict=True):
        key = f"d2/{model}/latent"
        if key not in arrays:
            _missing(ax, f"{model}: no model")
            continue
        latent, center = arrays[key], arrays[f"d2/{model}/center"]
        _scatter(ax, latent, density, norm)
        if model == "DeepSVDD":
            _circles(ax, center, [float(np.percentile(arrays[f"d2/{model}/latent_norm"], 99))])
        else:
            _circles(ax, center, [BASE_STD * k for k in (1, 2, 3)])
        ax.set_title(f"({label}) {model} latent")
    for ax in axes:
        ax.set_aspect("equal", adjustable="box")
    fig.colorbar(points, ax=axes, shrink=0.8, label="true density p(x)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _rho_title(rows: dict[tuple[int, str], ResultRow], dim: int, model: str, kind: str) -> str:
    row = rows.get((dim, model))
    if row is None:
        return f"{model}, d={dim}"
    rho, tau = (
        (row.spearman_norm, row.kendall_norm) if kind == "norm" else (row.spearman_loglik, row.kendall_loglik)
    )
    return f"{model}, d={dim}\nρ={rho:.3f}  τ={tau:.3f}"


def figure_scatter_grid(
    arrays: dict[str, np.ndarray],
    rows: dict[tuple[int, str], ResultRow],
    dims: tuple[int, ...],
    models: tuple[str, ...],
    kind: str,
    path: Path,
) -> None:
    """Figure 5 (``kind="norm"``: true ln p vs latent norm) or 6 (``"loglik"``: true vs estimated ln p)."""
    fig, axes = plt.subplots(
        len(models), len(dims), figsize=(3.2 * len(dims), 2.9 * len(models)), squeeze=False
    )
    column = "latent_norm" if kind == "norm" else "estimated_log_prob"
    for i, model in enumerate(models):
        for j, dim in enumerate(dims):
            ax = axes[i][j]
            key = f"d{dim}/{model}/{column}"
            if key not in arrays:
                _missing(ax, f"{model}, d={dim}: no model")
                continue
            true_log_prob = arrays[f"d{dim}/true_log_prob"]
            ax.scatter(true_log_prob, arrays[key], s=2, alpha=0.5, rasterized=True)
            if kind == "loglik":
                lo, hi = true_log_prob.min(), true_log_prob.max()
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(_rho_title(rows, dim, model, kind), fontsize=8)
            ax.set_xlabel("true log-likelihood", fontsize=7)
            ax.set_ylabel("latent norm" if kind == "norm" else "estimated log-likelihood", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def figure_volume_2d(arrays: dict[str, np.ndarray], model: str, path: Path) -> None:
    """Figures 7 / 8: ``|det J_φ(x)|`` colour-coded over the data (left) and the latents (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    key = f"d2/{model}/log_abs_det"
    if key not in arrays:
        for ax in axes:
            _missing(ax, f"{model}: no model")
    else:
        det = np.exp(arrays[key])
        lo, hi = float(det.min()), float(det.max())
        if math.isclose(lo, hi, rel_tol=1e-6):  # a USF: one value; widen so the colour bar is readable
            lo, hi = lo * 0.9, hi * 1.1
        norm = Normalize(lo, hi)
        points = _scatter(axes[0], arrays["d2/x"], det, norm, cmap="plasma")
        _true_density_contours(axes[0], arrays["d2/x"])
        axes[0].set_title(f"data space, true density contours ({model})", fontsize=9)
        latent, center = arrays[f"d2/{model}/latent"], arrays[f"d2/{model}/center"]
        _scatter(axes[1], latent - center, det, norm, cmap="plasma")
        _circles(axes[1], np.zeros(2), [BASE_STD * k for k in (1, 2, 3)])
        axes[1].set_title("centred latents, base contours 1σ–3σ", fontsize=9)
        for ax in axes:
            ax.set_aspect("equal", adjustable="box")
        fig.colorbar(points, ax=axes, shrink=0.8, label="|det J_φ(x)|")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_figures(
    out: Path, config: AlignmentConfig, arrays: dict[str, np.ndarray], rows: list[ResultRow]
) -> None:
    """Every figure: 5 and 6 always; 2, 7 and 8 when ``d = 2`` is among the dimensions."""
    by_key = {(r.dim, r.model): r for r in rows}
    figure_scatter_grid(arrays, by_key, config.dims, config.models, "norm", out / "fig5_loglik_vs_norm.png")
    flows = tuple(m for m in config.models if m in FLOW_NAMES) or FLOW_NAMES
    figure_scatter_grid(arrays, by_key, config.dims, flows, "loglik", out / "fig6_loglik_vs_estimate.png")
    if 2 in config.dims:
        figure_latent_2d(arrays, out / "fig2_latent_2d.png")
        figure_volume_2d(arrays, "NonUSFlow", out / "fig7_volume_nonusflow.png")
        figure_volume_2d(arrays, "USFlow", out / "fig8_volume_usflow.png")
