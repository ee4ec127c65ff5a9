"""QC picture of a tissue mask: the slide thumbnail with the mask outline drawn on it."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from magflow.atomic import atomic_path  # noqa: E402
from magflow.preprocess.tissue import TissueMask  # noqa: E402


def plot_tissue_qc(path: str | os.PathLike[str], thumbnail: np.ndarray, result: TissueMask,
                   title: str) -> None:
    """Save a PNG of ``thumbnail`` with the mask outline; µm scale on the axes."""
    height, width = result.mask.shape
    extent_mm = (0, width * result.mpp / 1000, height * result.mpp / 1000, 0)
    fig, ax = plt.subplots(figsize=(6, 6 * height / max(width, 1) + 0.6), dpi=120)
    ax.imshow(thumbnail[:height, :width], extent=extent_mm)
    if result.mask.any():
        ax.contour(np.linspace(0, extent_mm[1], width), np.linspace(0, extent_mm[2], height),
                   result.mask.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
    note = f"tissue {result.tissue_fraction:.1%} at {result.mpp:g} µm/px"
    if result.refused:
        note += (f", median brightness {result.brightness:.0f}/255\nREFUSED: not a brightfield scan "
                 "(see the slide QC table; the sheet's brightfield_check: off accepts it)")
    if result.warnings:
        note += "\nWARNING: " + "; ".join(result.warnings)
    flagged = bool(result.warnings or result.refused)
    ax.set_title(f"{title}\n{note}", fontsize=8, color="crimson" if flagged else "black")
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
