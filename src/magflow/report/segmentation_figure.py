"""Segmentation examples: a test slide's ground truth beside the maps painted at each mpp."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch
from PIL import Image

from magflow.palette import class_colours
from magflow.plotting import plt, save
from magflow.report.figures import skipped_figure

MAX_SLIDES = 2


def plot_segmentation_examples(record: Mapping[str, Any], maps_dir: str | os.PathLike[str],
                               path: str | os.PathLike[str], max_slides: int = MAX_SLIDES) -> None:
    if record["status"] != "ok":
        return skipped_figure(record, path, f"Segmentation: {record['model']}")
    result = record["result"]
    names = result["class_names"]
    colours = class_colours(len(names)) / 255
    slides = list(result["per_slide"].items())[:max_slides]
    columns = 1 + max(len(s["maps"]) for _, s in slides)
    fig, axes = plt.subplots(len(slides), columns, figsize=(1.9 * columns, 2.4 * len(slides) + 0.6), squeeze=False)
    for row, (slide, info) in enumerate(slides):
        panels = [("truth", info["truth_png"], None)] + [(f"{k} mpp", png, info["mpps"].get(k))
                                                        for k, png in info["maps"].items()]
        truth = np.asarray(Image.open(Path(maps_dir) / info["truth_png"]))
        for ax, (title, png, scores) in zip(axes[row], panels):
            labels = np.asarray(Image.open(Path(maps_dir) / png))
            if png != info["truth_png"]:  # the truth, faint, under the painted tiles
                ax.imshow(colours[np.clip(truth, 0, len(colours) - 1)], alpha=0.25, interpolation="nearest")
                labels = np.ma.masked_equal(labels, 0)
            rgba = np.concatenate([colours[np.clip(labels.filled(0) if np.ma.isMaskedArray(labels) else labels, 0,
                                                   len(colours) - 1)],
                                   (~np.ma.getmaskarray(labels))[..., None].astype(float)], axis=-1)
            ax.imshow(rgba, interpolation="nearest")
            if scores:
                title += f"\nmIoU {scores['mean_iou']:.2f} acc {scores['pixel_accuracy']:.2f}"
            ax.set_title(f"{slide}: {title}" if png == info["truth_png"] else title, fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    handles = [Patch(color=colours[i], label=name) for i, name in enumerate(names) if i > 0]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=6, frameon=False)
    fig.suptitle(f"{record['model']}: probe trained at {result['train_mpp']:g} mpp, painted per anchor tile",
                 fontsize=8)
    save(fig, path, rect=(0, 0.06, 1, 1))
