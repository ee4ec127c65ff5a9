"""Figure primitives: matplotlib without a display, and an atomic PNG save (the evaluation, report and AB-MIL figures)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from magflow.atomic import atomic_path  # noqa: E402

DPI = 110

__all__ = ["DPI", "plt", "save"]


def save(fig: Figure, path: str | os.PathLike[str], rect: tuple[float, float, float, float] | None = None) -> None:
    """Lay ``fig`` out (within ``rect``), write it as a PNG at ``path`` atomically and close it."""
    fig.tight_layout(rect=rect)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
