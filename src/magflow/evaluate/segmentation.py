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

The ``segmentation`` record (:func:`segmentation`) segments the test slides with one probe, trained at
one mpp and painted at every mpp. The linear probe is fitted on the first split's train/val tiles at
``segmentation_mpp``; each test slide with a label mask then gets, at every mpp, the probe's
prediction for each of its tiles with a view there, painted onto the mask's pixel grid (each anchor
cell takes its tile's class, ``tile_label_map``). Scores are taken over the labelled pixels under
those cells (``region``), so a map is not penalised for tiles the tile set never kept; ``coverage``
is the share of the slide's labelled pixels that this region holds. Maps are written as palette PNGs
(pixel = class index) beside a copy of the truth: ``{maps_dir}/{slide}.truth.png`` and
``{slide}.mpp~{t}.png``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.embed.labels import read_label_mask
from magflow.errors import ConfigError
from magflow.evaluate.data import EvalData, mpp_key
from magflow.evaluate.probes import PROBE_CONSTANTS, fit_probe_on_split, split_problem
from magflow.evaluate.record import MetricResult, MetricSkipped
from magflow.evaluate.split_plan import plan_splits
from magflow.palette import write_label_png

if TYPE_CHECKING:
    from magflow.evaluate.settings import EvalContext

BACKGROUND = 0  # the label of glass in the truth, and of "no tile" in a painted map
SCORES = ("mean_iou", "mean_dice", "pixel_accuracy")


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


def map_name(slide: str, mpp: float | None) -> str:
    return f"{slide}.truth.png" if mpp is None else f"{slide}.mpp~{mpp_key(mpp)}.png"


def segmentation(data: EvalData, context: EvalContext) -> MetricResult:
    """The ``segmentation`` record: the maps of the test slides and their scores per mpp (module docstring)."""
    train_mpp = context.settings.segmentation_mpp
    plan = plan_splits(data, context)
    split = plan.splits[0]
    if train_mpp not in data.mpps:
        raise MetricSkipped(f"the embeddings have no {train_mpp:g} mpp views to train the probe on (mpps: {data.mpps})")
    rows = data.labelled(train_mpp)
    problem = split_problem(data.labels[rows], split.rows(data.slides[rows]))
    if problem:
        raise MetricSkipped(f"the probe cannot be trained at {train_mpp:g} mpp: {problem}")
    probe = fit_probe_on_split(data.features(train_mpp, rows), data.labels[rows], split.rows(data.slides[rows]))
    slides = [s for s in sorted(split.test) if s in context.masks]
    if not slides:
        raise MetricSkipped(f"no test slide ({', '.join(sorted(split.test))}) has a label mask")
    out_dir = Path(context.maps_dir or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    n_classes = len(data.class_names)
    per_slide = {s: _paint_slide(data, probe.predict, s, context.masks[s], out_dir, n_classes) for s in slides}
    means = {}
    for m in data.mpps:
        scored = [p["mpps"][mpp_key(m)] for p in per_slide.values() if mpp_key(m) in p["mpps"]]
        if scored:
            means[mpp_key(m)] = {k: float(np.mean([s[k] for s in scored])) for k in (*SCORES, "coverage")}
            means[mpp_key(m)]["slides"] = len(scored)
    result = {"train_mpp": train_mpp, "probe_c": probe.c, "split": plan.describe(), "test_slides": slides,
              "mean_over_slides": means, "per_slide": per_slide, "class_names": data.class_names,
              "maps_dir": str(out_dir)}
    return MetricResult(result, [split.seed], {"linear": PROBE_CONSTANTS["linear"], "cell_um": data.cell_um(),
                                               "region": "labelled pixels under the slide's tiles with a view"})


def _paint_slide(data: EvalData, predict: Callable[[np.ndarray], np.ndarray], slide: str,
                 mask_path: str | os.PathLike[str], out_dir: Path,
                 n_classes: int) -> dict[str, Any]:
    mask = read_label_mask(mask_path)
    if mask.class_names != data.class_names[:len(mask.class_names)]:
        raise ConfigError(f"{mask_path}: its classes {mask.class_names} are not those the tiles were labelled "
                          f"with ({data.class_names}); segment with the masks the embed step used")
    truth = mask.labels.astype(np.int64)
    write_label_png(out_dir / map_name(slide, None), truth, n_classes)
    labelled_pixels = int(np.count_nonzero(truth != mask.background))
    scores, left_out, maps = {}, {}, {}
    for m in data.mpps:
        rows = np.flatnonzero((data.slides == slide) & data.usable(m))
        if not len(rows):
            left_out[mpp_key(m)] = "no tile of this slide has a view at this mpp"
            continue
        grid = data.emb.grid[rows]
        painted = tile_label_map(grid, predict(data.features(m, rows)), data.cell_um(), truth.shape, mask.mpp,
                                 fill=mask.background)
        region = tile_label_map(grid, np.ones(len(rows)), data.cell_um(), truth.shape, mask.mpp, fill=0) > 0
        write_label_png(out_dir / map_name(slide, m), painted, n_classes)
        maps[mpp_key(m)] = map_name(slide, m)
        try:
            s = segmentation_scores(truth, painted, region, ignore_label=mask.background)
        except ValueError as error:  # every painted cell lies on glass
            left_out[mpp_key(m)] = str(error)
            continue
        scores[mpp_key(m)] = {"mean_iou": s.mean_iou, "mean_dice": s.mean_dice, "pixel_accuracy": s.pixel_accuracy,
                              "per_class_iou": s.per_class_iou, "per_class_dice": s.per_class_dice,
                              "n_pixels": s.n_pixels, "n_tiles": len(rows),
                              "coverage": s.n_pixels / labelled_pixels if labelled_pixels else 0.0}
    return {"mask": str(mask_path), "mask_mpp": mask.mpp, "truth_png": map_name(slide, None),
            "maps": maps,
            "mpps": scores, "left_out": left_out}
