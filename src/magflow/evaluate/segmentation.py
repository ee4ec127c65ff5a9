"""Tile-based segmentation: per-tile predictions painted onto the ground-truth mask's grid, and scored.

Painting. Tile grids and the label mask share the slide origin. A tile at (col, row) with cells of
``cell_um`` µm covers [col·cell_um, (col+1)·cell_um) × [row·cell_um, (row+1)·cell_um); a mask pixel
(x, y) of ``mask_mpp`` µm takes the prediction of the tile containing its centre ((x + ½)·mask_mpp,
(y + ½)·mask_mpp). Pixels under no tile get ``fill`` (0: no prediction). So each pixel has exactly
one value, whatever the tile and mask resolutions.

Scoring. Pixels whose truth is the background label (0, glass) are ignored; all other pixels are
evaluated (optionally only inside ``region``, e.g. the area every mpp's grid covers). A labelled
pixel under no tile counts as wrong. Per class c ≠ background present in the evaluated truth or
prediction: IoU_c = |T_c ∩ P_c| / |T_c ∪ P_c| and Dice_c = 2|T_c ∩ P_c| / (|T_c| + |P_c|). Mean IoU
and mean Dice average those classes; pixel accuracy is the fraction of evaluated pixels predicted
right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

BACKGROUND = 0  # the label of glass in the truth, and of "no tile" in a painted map


@dataclass(frozen=True)
class SegmentationScores:
    mean_iou: float
    mean_dice: float
    pixel_accuracy: float
    per_class_iou: dict[int, float]
    per_class_dice: dict[int, float]
    n_pixels: int  # evaluated pixels


def tile_label_map(grid: ArrayLike, predicted: ArrayLike, cell_um: float, mask_shape: tuple[int, int],
                   mask_mpp: float, fill: int = BACKGROUND) -> NDArray[np.int64]:
    """The mask_shape (rows × cols) label map: each pixel takes the class of the tile over its centre."""
    cells = np.asarray(grid, dtype=np.int64).reshape(-1, 2)
    classes = np.asarray(predicted, dtype=np.int64).ravel()
    if len(cells) != len(classes):
        raise ValueError("need one predicted class per grid cell")
    if cell_um <= 0 or mask_mpp <= 0:
        raise ValueError("cell_um and mask_mpp must be positive")
    tiles = np.full((cells[:, 1].max(initial=-1) + 1, cells[:, 0].max(initial=-1) + 1), fill, np.int64)
    tiles[cells[:, 1], cells[:, 0]] = classes
    rows, cols = mask_shape
    tile_row = np.floor((np.arange(rows) + 0.5) * mask_mpp / cell_um).astype(np.int64)
    tile_col = np.floor((np.arange(cols) + 0.5) * mask_mpp / cell_um).astype(np.int64)
    out = np.full((rows, cols), fill, np.int64)
    r_in, c_in = tile_row < tiles.shape[0], tile_col < tiles.shape[1]
    out[np.ix_(r_in, c_in)] = tiles[np.ix_(tile_row[r_in], tile_col[c_in])]
    return out


def pixel_confusion(truth: ArrayLike, predicted: ArrayLike, region: ArrayLike | None = None,
                    ignore_label: int = BACKGROUND, n_classes: int = 0) -> NDArray[np.int64]:
    """Counts of evaluated pixels (truth ≠ ``ignore_label``, inside ``region``) by [truth class, predicted class].

    Summing the matrices of several slides pools their pixels without holding them all at once.
    """
    t, p = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} must have one shape")
    evaluated = t != ignore_label
    if region is not None:
        evaluated &= np.asarray(region, dtype=bool)
    t, p = t[evaluated], p[evaluated]
    if (t.size and t.min() < 0) or (p.size and p.min() < 0):
        raise ValueError("class labels must be >= 0")
    k = max(n_classes, int(t.max(initial=-1)) + 1, int(p.max(initial=-1)) + 1, ignore_label + 1)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def confusion_scores(confusion: ArrayLike, ignore_label: int = BACKGROUND) -> SegmentationScores:
    """Mean IoU, mean Dice and pixel accuracy from a :func:`pixel_confusion` matrix (see the module docstring)."""
    m = np.asarray(confusion, dtype=np.int64)
    total = int(m.sum())
    if total == 0:
        raise ValueError("no labelled pixel to evaluate")
    in_t, in_p, both = m.sum(axis=1), m.sum(axis=0), np.diagonal(m)
    classes = [c for c in range(len(m)) if c != ignore_label and (in_t[c] or in_p[c])]
    iou = {c: int(both[c]) / int(in_t[c] + in_p[c] - both[c]) for c in classes}
    dice = {c: 2 * int(both[c]) / int(in_t[c] + in_p[c]) for c in classes}
    return SegmentationScores(
        mean_iou=float(np.mean(list(iou.values()))),
        mean_dice=float(np.mean(list(dice.values()))),
        pixel_accuracy=int(np.trace(m)) / total,
        per_class_iou=iou, per_class_dice=dice, n_pixels=total,
    )


def segmentation_scores(truth: ArrayLike, predicted: ArrayLike, region: ArrayLike | None = None,
                        ignore_label: int = BACKGROUND) -> SegmentationScores:
    """Mean IoU, mean Dice and pixel accuracy of a predicted label map against the truth."""
    return confusion_scores(pixel_confusion(truth, predicted, region, ignore_label), ignore_label)


def tile_coverage(grid: ArrayLike, cell_um: float, mask_shape: tuple[int, int], mask_mpp: float) -> NDArray[np.bool_]:
    """The mask pixels whose centre lies under one of the tiles at ``grid`` (the pixels a painted map covers)."""
    cells = np.asarray(grid, dtype=np.int64).reshape(-1, 2)
    return tile_label_map(cells, np.ones(len(cells), np.int64), cell_um, mask_shape, mask_mpp, fill=0) == 1
