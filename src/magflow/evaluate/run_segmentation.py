"""Tile-based segmentation of the test slides: one probe, trained at one mpp, painted at every mpp.

The linear probe is fitted on the first split's train/val tiles at ``segmentation_mpp``; each test
slide with a label mask then gets, at every mpp, the probe's prediction for each of its tiles with
a view there, painted onto the mask's pixel grid (each anchor cell takes its tile's class,
``tile_label_map``). Scores are taken over the labelled pixels under those cells (``region``), so a
map is not penalised for tiles the tile set never kept; ``coverage`` is the share of the slide's
labelled pixels that this region holds. Maps are written as palette PNGs (pixel = class index)
beside a copy of the truth: ``{maps_dir}/{slide}.truth.png`` and ``{slide}.mpp~{t}.png``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from magflow.embed.labels import read_label_mask
from magflow.errors import ConfigError
from magflow.evaluate.data import EvalData, mpp_key
from magflow.evaluate.linear_probe import fit_probe_on_split
from magflow.evaluate.outcome import MetricResult, MetricSkipped
from magflow.evaluate.run_labels import PROBE_CONSTANTS
from magflow.evaluate.segmentation import segmentation_scores, tile_label_map
from magflow.evaluate.settings import EvalContext
from magflow.evaluate.split_plan import plan_splits, split_problem
from magflow.report.palette import write_label_png

SCORES = ("mean_iou", "mean_dice", "pixel_accuracy")


def map_name(slide: str, mpp: float | None) -> str:
    return f"{slide}.truth.png" if mpp is None else f"{slide}.mpp~{mpp_key(mpp)}.png"


def segmentation(data: EvalData, context: EvalContext) -> MetricResult:
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
