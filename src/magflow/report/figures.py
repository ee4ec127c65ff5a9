"""Evaluation figures from the metric records: RankMe profiles, probe curves and the mpp × mpp heatmaps.

Every function takes a record (``magflow.evaluate.record``) and writes one PNG atomically; a skipped
record gives a figure that says why, so every expected figure exists. A run's profiles are drawn with
its control (the same network at initialisation, ``magflow.embed.control``) as a dashed line of the
same colour, so what the view pipeline alone does is seen beside what training did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from magflow.plotting import plt, save

STANDARD_MPPS = (0.25, 0.5, 1.0, 2.0)  # 40x, 20x, 10x, 5x: the scanner scales; the rest are intermediate
CONTROL_STYLE = {"ls": "--", "lw": 1.2, "alpha": 0.7}  # a run's control: dashed, in the run's colour
CONTROL_LABEL = "same network at initialisation (control)"


def skipped_figure(record: Mapping[str, Any], path: str | os.PathLike[str], title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2.2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\nskipped: {record.get('reason', '')}", ha="center", va="center", wrap=True, fontsize=9)
    save(fig, path)


def is_standard(mpp: float) -> bool:
    return any(abs(mpp - s) < 1e-9 for s in STANDARD_MPPS)


def mpp_axis(ax: plt.Axes, mpps: Sequence[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(mpps), [f"{m:g}" for m in mpps])
    ax.minorticks_off()
    for m in mpps:
        ax.axvline(m, color="0.75" if is_standard(m) else "0.88", lw=0.8, ls="-" if is_standard(m) else ":", zorder=0)
    ax.set_xlabel("mpp (µm/px): solid = standard, dotted = intermediate")


def profile_line(ax: plt.Axes, mpps: Sequence[float], values: Sequence[float], label: str, colour: Any) -> None:
    ax.plot(mpps, values, color=colour, lw=1.5, label=label)
    for m, v in zip(mpps, values):
        ax.plot(m, v, "o", color=colour, mfc=colour if is_standard(m) else "white", ms=6)


def rankme_label(record: Mapping[str, Any]) -> str:
    """The axis label of a RankMe record: which definition it was computed by (records before it: paper)."""
    definition = (record.get("result") or {}).get("definition") or "paper"
    return {"paper": "RankMe (singular values, uncentred)",
            "covariance": "RankMe (covariance eigenvalues)"}.get(definition, f"RankMe ({definition})")


def rankme_points(record: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    result = record["result"]
    mpps = [float(m) for m in result["mpps"]]
    return mpps, [result["rankme"][f"{m:g}"] for m in mpps]


def _ok(record: Mapping[str, Any] | None) -> bool:
    return bool(record) and record.get("status") == "ok"


def control_line(ax: plt.Axes, mpps: Sequence[float], values: Sequence[float], colour: Any, label: str | None) -> None:
    ax.plot(mpps, values, color=colour, marker=".", ms=4, label=label, **CONTROL_STYLE)


def rescale(values: np.ndarray, top: float) -> np.ndarray:
    """``values`` scaled so their maximum is ``top``: ratios are kept, so a flat curve stays flat."""
    peak = float(np.max(values))
    return np.asarray(values, np.float64) * (top / peak) if peak > 0 else np.asarray(values, np.float64)


def plot_rankme_profile(record: Mapping[str, Any], path: str | os.PathLike[str],
                        sampler: Mapping[str, Any] | None = None, control: Mapping[str, Any] | None = None) -> None:
    """RankMe per mpp (filled markers: standard mpps, open: intermediate), with the run's sampler's I(y)
    scaled so that its maximum meets the highest RankMe, when a sampler is given, and the RankMe of the
    ``control`` record (the same network at initialisation) dashed."""
    if record["status"] != "ok":
        return skipped_figure(record, path, f"RankMe: {record['model']}")
    mpps, values = rankme_points(record)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    profile_line(ax, mpps, values, "RankMe (measured)", "C0")
    if _ok(control):
        control_line(ax, *rankme_points(control), "C0", CONTROL_LABEL)
    if sampler and sampler.get("grid") and sampler.get("I"):
        grid, quality = np.asarray(sampler["grid"], float), np.asarray(sampler["I"], float)
        ax.plot(grid, rescale(quality, max(values)), "--", color="C3", lw=1.2,
                label=f"predicted I(y), {sampler.get('strategy')} (× max RankMe / max I)")
    result = record["result"]
    mpp_axis(ax, sorted(set(mpps) | {float(k) for k in result.get("left_out", {})}))
    ax.set_ylabel(rankme_label(record))
    n = sorted(set(result["n"].values()))
    ax.set_title(f"{record['model']}\nN = {', '.join(map(str, n))} tiles ({result['rows']})", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    save(fig, path)


def _probe_means(record: Mapping[str, Any], probe: str, score: str) -> tuple[list[float], np.ndarray]:
    scores = record["result"]["scores"]
    mpps = [float(m) for m in record["result"]["mpps"] if f"{float(m):g}" in scores]
    return mpps, np.array([scores[f"{m:g}"][probe][score]["mean"] for m in mpps], float)


def plot_probe_curves(record: Mapping[str, Any], path: str | os.PathLike[str],
                      control: Mapping[str, Any] | None = None) -> None:
    """kNN and linear-probe balanced accuracy and macro-F1 per mpp, mean ± std over the splits; the
    ``control`` record's means (the same network at initialisation) dashed."""
    if record["status"] != "ok":
        return skipped_figure(record, path, f"Probes: {record['model']}")
    result = record["result"]
    mpps = [float(m) for m in result["mpps"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, score in zip(axes, ("balanced_accuracy", "macro_f1")):
        for colour, probe in (("C0", "knn"), ("C1", "linear")):
            cells = [result["scores"][f"{m:g}"][probe][score] for m in mpps]
            mean = np.array([c["mean"] for c in cells], float)
            std = np.array([c["std"] or 0.0 for c in cells], float)
            ax.fill_between(mpps, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
            knn = "kNN (k chosen on dev)" if record.get("protocol") == "cms" else "kNN (k = 20)"
            profile_line(ax, mpps, mean, knn if probe == "knn" else "linear probe", colour)
            if _ok(control):
                control_line(ax, *_probe_means(control, probe, score), colour,
                             f"{'kNN' if probe == 'knn' else 'linear'} at initialisation (control)")
        mpp_axis(ax, mpps)
        ax.set_title(score.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("test score (mean ± std over splits)")
    axes[0].legend(fontsize=7)
    mode = (result.get("split") or {}).get("mode") or result.get("protocol", "")
    fig.suptitle(f"{record['model']}: {len(record['seeds'])} split(s), {mode}", fontsize=9)
    save(fig, path)


def heatmap(ax: plt.Axes, matrix: np.ndarray, mpps: Sequence[float], fmt: str, vmin: float, vmax: float,
            cmap: str = "viridis") -> None:
    image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap=cmap)
    labels = [f"{m:g}" for m in mpps]
    ax.set_xticks(range(len(mpps)), labels)
    ax.set_yticks(range(len(mpps)), labels)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7,
                    color="white" if value < (vmin + vmax) / 2 else "black")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def _matrix(values: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], float)


def plot_cross_mpp(record: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Balanced accuracy of a probe trained at one mpp (rows) and tested at another (columns), and the
    share of its own same-mpp score that it keeps (accuracy retained %)."""
    if record["status"] != "ok":
        return skipped_figure(record, path, f"Cross-mpp: {record['model']}")
    result = record["result"]
    mpps = result["mpps"]
    scores = result["balanced_accuracy"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    heatmap(axes[0], _matrix(scores["mean"]), mpps, ".2f", 0, 1)
    heatmap(axes[1], _matrix(scores["retained_percent"]["mean"]), mpps, ".0f", 0, 100, cmap="magma")
    for ax, title in zip(axes, ("balanced accuracy", "accuracy retained % (of the same-mpp score)")):
        ax.set_xlabel("test mpp")
        ax.set_ylabel("train mpp")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{record['model']}: mean over {len(record['seeds'])} split(s)", fontsize=9)
    save(fig, path)


def plot_centroids(record: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Cosine similarity between the per-mpp centroids of the unit-normalised embeddings."""
    if record["status"] != "ok":
        return skipped_figure(record, path, f"Centroids: {record['model']}")
    result = record["result"]
    matrix = _matrix(result["matrix"])
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    low = float(np.nanmin(matrix))
    heatmap(ax, matrix, result["mpps"], ".3f", low if low < 1 else 0.0, 1.0)
    ax.set_title(f"{record['model']}\ncentroid cosine similarity ({result['rows']})", fontsize=9)
    save(fig, path)
