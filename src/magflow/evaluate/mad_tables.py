"""Tables 3 and 5 of the MAD paper (Gokmen et al., arXiv 2512.14796) on the ``mad`` tile embeddings.

Both read a :class:`~magflow.evaluate.mad_tiles.MadTiles` (every kept tile of every scale, labelled by
the majority pixel class of its square, and the slides' train/val/test splits).

Table 3 (:func:`table3`), at each magnification separately (2.5×, 10×, 40× = 4.0, 1.0, 0.25 mpp):

- per-class F1 of the linear classifier (``settings.probe``: ``paper-linear``, the paper's one linear
  layer, Adam lr 1e-4, batch 64, cross-entropy, see ``magflow.evaluate.probes``; or
  ``logistic``, the project's probe) trained on the labelled tiles of the train-split slides at that
  magnification (the val-split tiles early-stop the paper-linear probe, or choose the logistic probe's
  C, which is then refitted on train + val, as the project's probe does) and scored on
  the labelled tiles of the test-split slides at that magnification;
- per-class F1 of kNN (k = ``settings.knn_k``, cosine, ``magflow.evaluate.probes``) with the train-split
  tiles as reference, scored on the same test tiles;
- mean ± std (ddof 1) over ``settings.runs`` runs. A run of the paper-linear probe is one training
  seed (``settings.seed + r``: the layer's initialisation and the batch order). kNN on a fixed
  reference set, and the lbfgs logistic regression, have nothing random: their runs would be
  identical, so one run is reported (``runs: 1``, ``varies`` says why) rather than five copies.

Table 3's last columns: AMI and Davies-Bouldin index of K-Means (K = the number of classes present)
over the pooled embeddings: the labelled tiles of the TEST-split slides at all magnifications
together, label = tissue class, through :func:`magflow.evaluate.clustering.kmeans_scores`
(L2-normalised features, K-Means n_init 10, random_state ``settings.seed``). The test slides are the
tiles the classifiers are scored on; K-Means uses no label to fit.

Table 5 (:func:`table5`): one probe (``settings.probe``, seed ``settings.seed``) is trained on the
labelled tiles of the train-split slides at ``settings.segmentation_train_mpp`` (10×) and applied
unchanged to every tile (labelled or not) of each magnification of each test slide that has a label
mask. Each magnification's predictions are painted on that magnification's own grid onto the label
mask's pixel grid (``magflow.evaluate.segmentation.tile_label_map``: a 2.5× tile paints its whole
896 µm square, a 40× tile its 56 µm square). Per magnification, mIoU, Dice and pixel accuracy are
computed over the labelled (non-background) pixels covered by that magnification's tiles, pooled
over the test slides; ``coverage`` is the share of labelled pixels covered. The paper's consistency
% is the finest magnification's mIoU over the training magnification's (40× / 10×; the paper:
0.8584 / 0.8875 = 96.7%).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import f1_score

from magflow.aggregate.methods import magnification
from magflow.embed.labels import read_label_mask
from magflow.errors import ConfigError
from magflow.evaluate.clustering import KMEANS_N_INIT, kmeans_scores
from magflow.evaluate.mad_tiles import MadScale, MadTiles
from magflow.evaluate.probe_names import check_probe
from magflow.evaluate.probes import KNN_METRIC, KNN_WEIGHTS, STD_DDOF, Probe, fit_probe, knn_predict, probe_record
from magflow.evaluate.record import MetricSkipped
from magflow.evaluate.segmentation import (BACKGROUND, confusion_scores, pixel_confusion, tile_coverage,
                                          tile_label_map)
from magflow.palette import write_label_png

if TYPE_CHECKING:
    from magflow.evaluate.mad_eval import MadEvalSettings  # mad_eval imports this module to run the tables

CONSISTENCY = "100 · mIoU(finest magnification) / mIoU(training magnification): 40× / 10× in the paper"


def _mag_key(mpp: float) -> str:
    """The ascii name of a magnification, for file names and record keys: ``2.5x``, ``10x``, ``40x``."""
    return magnification(mpp).replace("×", "x")


def _check(settings: MadEvalSettings) -> tuple[str, int, int]:
    probe = check_probe(str(settings.probe), "evaluate.mad.probe")
    if int(settings.runs) < 1 or int(settings.knn_k) < 1:
        raise ConfigError(f"evaluate.mad: runs ({settings.runs}) and knn_k ({settings.knn_k}) must be >= 1")
    epochs = int(settings.epochs)
    patience = int(settings.patience)
    if epochs < 1 or patience < 1:
        raise ConfigError(f"evaluate.mad: epochs ({epochs}) and patience ({patience}) must be >= 1")
    return probe, epochs, patience


def _mean_std(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    std = float(np.std(v, ddof=STD_DDOF)) if v.size > STD_DDOF else 0.0
    return {"mean": float(v.mean()), "std": std, "per_run": [float(x) for x in v]}


def _name(names: list[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else str(c)


def _split_rows(tiles: MadTiles, scale: MadScale) -> dict[str, np.ndarray]:
    return {part: scale.rows(tiles.slides_in(part), labelled=True) for part in ("train", "val", "test")}


def _f1_runs(predictions: list[np.ndarray], truth: np.ndarray, classes: np.ndarray,
             names: list[str]) -> dict[str, Any]:
    per_run = [f1_score(truth, p, labels=classes, average=None, zero_division=0) for p in predictions]
    per_class = {_name(names, int(c)): _mean_std([float(r[i]) for r in per_run]) for i, c in enumerate(classes)}
    macro = _mean_std([float(np.mean(r)) for r in per_run])
    return {"per_class_f1": per_class, "macro_f1": macro}


def _fit(probe: str, scale: MadScale, rows: Mapping[str, np.ndarray], seed: int, epochs: int,
         patience: int) -> Probe:
    x, y = scale.features, scale.labels
    return fit_probe(probe, x[rows["train"]], y[rows["train"]], x[rows["val"]], y[rows["val"]], seed,
                     epochs=epochs, patience=patience)


def _table3_scale(tiles: MadTiles, scale: MadScale, settings: MadEvalSettings, probe: str, epochs: int,
                  patience: int) -> dict[str, Any]:
    rows = _split_rows(tiles, scale)
    counts = {f"n_{part}": int(len(r)) for part, r in rows.items()}
    y = scale.labels
    if len(np.unique(y[rows["train"]])) < 2 or not len(rows["test"]):
        raise ValueError(f"{counts['n_train']} labelled train tiles in {len(np.unique(y[rows['train']]))} classes "
                         f"and {counts['n_test']} labelled test tiles (need two classes and a test tile)")
    if probe == "logistic" and not len(rows["val"]):
        raise ValueError("no labelled val tile to choose the logistic probe's C")
    truth = y[rows["test"]]
    classes = np.unique(truth)  # per-class F1 of the classes the test tiles hold (a train-only one has none)
    first = int(settings.seed)
    seeds = [first + r for r in range(int(settings.runs))] if probe == "paper-linear" else [first]
    linear_preds, records = [], []
    for seed in seeds:
        fitted = _fit(probe, scale, rows, seed, epochs, patience)
        linear_preds.append(fitted.predict(scale.features[rows["test"]]))
        records.append(probe_record(fitted))
    linear = {**_f1_runs(linear_preds, truth, classes, tiles.class_names), "probe": probe, "runs": len(seeds),
              "seeds": seeds, "fits": records,
              "varies": "the training seed (initialisation and batch order)" if probe == "paper-linear"
              else "nothing: lbfgs on fixed tiles is deterministic, so one run is reported"}
    knn: dict[str, Any] = {"k": int(settings.knn_k), "metric": KNN_METRIC, "weights": KNN_WEIGHTS,
                           "reference": "train-split tiles"}
    if len(rows["train"]) < settings.knn_k:  # kNN alone is left out; the linear classifier is still scored
        knn.update(status="skipped", reason=f"{len(rows['train'])} labelled train tiles, fewer than k = "
                                            f"{settings.knn_k}")
    else:
        knn_pred = knn_predict(scale.features[rows["train"]], y[rows["train"]], scale.features[rows["test"]],
                               int(settings.knn_k))
        knn.update(_f1_runs([knn_pred], truth, classes, tiles.class_names), runs=1, status="ok",
                   varies="nothing: kNN on a fixed reference set is deterministic, so one run is reported")
    return {"mpp": scale.target_mpp, "achieved_mpp": scale.mpp, "magnification": magnification(scale.target_mpp),
            **counts, "classes": [_name(tiles.class_names, int(c)) for c in classes], "linear": linear, "knn": knn}


def pooled_kmeans(tiles: MadTiles, seed: int = 0) -> dict[str, Any]:
    """AMI and DBI of K-Means over the labelled test-split tiles of every scale together."""
    test = tiles.slides_in("test")
    parts = {m: tiles.scales[m].rows(test, labelled=True) for m in tiles.mpps}
    x = np.concatenate([tiles.scales[m].features[r] for m, r in parts.items()])
    y = np.concatenate([tiles.scales[m].labels[r] for m, r in parts.items()])
    scores = kmeans_scores(x, y, seed=seed)
    return {"ami": scores.ami, "davies_bouldin": scores.davies_bouldin,
            "davies_bouldin_classes": scores.davies_bouldin_classes, "k": scores.n_clusters, "seed": scores.seed,
            "n_init": KMEANS_N_INIT, "n": int(len(y)), "n_per_mpp": {f"{m:g}": int(len(r)) for m, r in parts.items()},
            "pooled": "labelled tiles of the test-split slides, all magnifications together; label = tissue class",
            "features": "L2-normalised"}


def table3(tiles: MadTiles, settings: MadEvalSettings) -> dict[str, Any]:
    """Per-class F1 of the linear probe and kNN per magnification, and the pooled K-Means scores."""
    probe, epochs, patience = _check(settings)
    per_mag, left_out = {}, {}
    for m in tiles.mpps:
        try:
            per_mag[_mag_key(m)] = _table3_scale(tiles, tiles.scales[m], settings, probe, epochs, patience)
        except ValueError as error:
            left_out[_mag_key(m)] = str(error)
    if not per_mag:
        raise MetricSkipped("MAD Table 3: no magnification can be scored: " + "; ".join(
            f"{k}: {v}" for k, v in left_out.items()) + "; check the slides' splits and label masks")
    try:
        kmeans: dict[str, Any] = pooled_kmeans(tiles, int(settings.seed))
    except ValueError as error:
        kmeans = {"skipped": str(error)}
    return {"table": "MAD Table 3", "probe": probe, "knn_k": int(settings.knn_k), "runs": int(settings.runs),
            "seed": int(settings.seed), "splits": {p: len(tiles.slides_in(p)) for p in ("train", "val", "test")},
            "scores": per_mag, "left_out": left_out, "kmeans": kmeans}


def _scores(confusion: np.ndarray, labelled: int, names: list[str]) -> dict[str, Any]:
    """Scores of the labelled pixels a magnification's tiles cover, from their confusion counts."""
    covered = int(confusion.sum())
    out: dict[str, Any] = {"labelled_pixels": labelled, "covered_pixels": covered,
                           "coverage": covered / labelled if labelled else 0.0}
    if not covered:
        return {**out, "mean_iou": None, "mean_dice": None, "pixel_accuracy": None}
    s = confusion_scores(confusion)
    return {**out, "mean_iou": s.mean_iou, "mean_dice": s.mean_dice, "pixel_accuracy": s.pixel_accuracy,
            "per_class_iou": {_name(names, c): v for c, v in s.per_class_iou.items()},
            "per_class_dice": {_name(names, c): v for c, v in s.per_class_dice.items()}}


def table5(tiles: MadTiles, masks: Mapping[str, str | os.PathLike[str]], settings: MadEvalSettings,
           maps_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Segmentation of the test slides at every magnification by one probe trained at 10×; writes the maps."""
    probe, epochs, patience = _check(settings)
    train_mpp = float(settings.segmentation_train_mpp)
    train_scale = tiles.scale(train_mpp)
    rows = _split_rows(tiles, train_scale)
    try:
        fitted = _fit(probe, train_scale, rows, int(settings.seed), epochs, patience)
    except ValueError as error:
        raise MetricSkipped(f"MAD Table 5: the {probe} probe cannot be trained at evaluate.mad.segmentation_train_mpp "
                          f"{train_mpp:g}: {error}; check the train/val slides' label masks") from None
    test = tiles.slides_in("test")
    scored, missing = [s for s in test if s in masks], [s for s in test if s not in masks]
    if not scored:
        raise MetricSkipped(f"MAD Table 5: none of the {len(test)} test slides has a label mask; give them one in "
                          "the slide sheet's `annotation` column (phantom slides have their own)")
    maps = Path(maps_dir)
    maps.mkdir(parents=True, exist_ok=True)
    n_classes = len(tiles.class_names)
    confusion = {m: np.zeros((n_classes, n_classes), np.int64) for m in tiles.mpps}
    labelled_pixels, n_tiles = 0, {m: 0 for m in tiles.mpps}
    per_slide: dict[str, Any] = {}
    for slide in scored:
        mask = read_label_mask(masks[slide])
        if list(mask.class_names) != list(tiles.class_names):
            raise ConfigError(f"slide {slide}: its label mask {masks[slide]} names the classes {mask.class_names}, "
                              f"the mad tile embeddings {tiles.class_names}; embed the tiles with this mask")
        if mask.background != BACKGROUND:
            raise ConfigError(f"slide {slide}: label mask {masks[slide]} has background {mask.background}; the "
                              f"segmentation scores need background {BACKGROUND}")
        write_label_png(maps / f"{slide}.truth.png", mask.labels, n_classes)
        labelled = int(np.count_nonzero(mask.labels != BACKGROUND))
        labelled_pixels += labelled
        per_slide[slide] = {}
        for m in tiles.mpps:
            scale = tiles.scales[m]
            r = scale.rows([slide])
            predicted = fitted.predict(scale.features[r]) if len(r) else np.zeros(0, np.int64)
            painted = tile_label_map(scale.grid[r], predicted, scale.cell_um, mask.labels.shape, mask.mpp)
            covered = tile_coverage(scale.grid[r], scale.cell_um, mask.labels.shape, mask.mpp)
            write_label_png(maps / f"{slide}.{_mag_key(m)}.png", painted, n_classes)
            slide_confusion = pixel_confusion(mask.labels, painted, covered, BACKGROUND, n_classes)
            confusion[m] += slide_confusion
            n_tiles[m] += int(len(r))
            per_slide[slide][_mag_key(m)] = {"n_tiles": int(len(r)),
                                              **_scores(slide_confusion, labelled, tiles.class_names)}
    per_mag = {_mag_key(m): {"mpp": m, "magnification": magnification(m), "n_tiles": n_tiles[m],
                             **_scores(confusion[m], labelled_pixels, tiles.class_names)} for m in tiles.mpps}
    return {"table": "MAD Table 5", "probe": probe_record(fitted), "train_mpp": train_mpp,
            "train_magnification": magnification(train_mpp), "n_train": int(len(rows["train"])),
            "n_val": int(len(rows["val"])), "seed": int(settings.seed), "slides": scored,
            "test_slides_without_mask": missing, "scores": per_mag, "per_slide": per_slide,
            "consistency_percent": consistency_percent(per_mag, min(tiles.mpps), train_mpp),
            "consistency": CONSISTENCY, "maps": {"dir": maps.name, "truth": "{slide}.truth.png",
                                                 "predicted": "{slide}.{magnification}.png"}}


def consistency_percent(per_mag: Mapping[str, Mapping[str, Any]], fine_mpp: float, train_mpp: float) -> float | None:
    """100 · mIoU at ``fine_mpp`` / mIoU at ``train_mpp`` (None when either is missing or the latter is 0)."""
    fine, train = per_mag.get(_mag_key(fine_mpp), {}), per_mag.get(_mag_key(train_mpp), {})
    if fine.get("mean_iou") is None or not train.get("mean_iou"):
        return None
    return 100.0 * float(fine["mean_iou"]) / float(train["mean_iou"])
