"""Class colours shared by the label-map PNGs and the figures: class 0 (glass, or no tile) is white."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from magflow.atomic import atomic_path


def class_colours(n_classes: int) -> np.ndarray:
    """(max(n, 1), 3) uint8 RGB: white for class 0, then tab10 (tab20 beyond ten classes)."""
    table = colormaps["tab10" if n_classes <= 11 else "tab20"]
    colours = [(1.0, 1.0, 1.0)] + [table(i % table.N)[:3] for i in range(max(n_classes - 1, 0))]
    return np.round(np.array(colours) * 255).astype(np.uint8)


def write_label_png(path: str | os.PathLike[str], labels: np.ndarray, n_classes: int) -> Path:
    """A palette PNG: pixel values are the class indices, shown in :func:`class_colours`."""
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError("class indices must lie in 0..255 to be stored as a palette PNG")
    image = Image.fromarray(values.astype(np.uint8))  # mode L; putpalette makes it P
    image.putpalette(class_colours(max(n_classes, int(values.max(initial=0)) + 1)).ravel().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
