"""Label-based metrics of one model: kNN and linear probes per mpp, the cross-mpp matrix, K-Means.

Every mpp uses its labelled tiles with a view there, and the same slide splits (see
``magflow.evaluate.split_plan``). An mpp whose tiles cannot be probed on some split (no val or test
tile, one class, fewer than k reference tiles) is left out with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from magflow.evaluate.classification import ScoreSummary
from magflow.evaluate.cms import CMS_CONSTANTS, CMS_TRAIN_MPPS, cms_protocol
from magflow.evaluate.cms import PROTOCOL as CMS
from magflow.evaluate.clustering import KMEANS_N_INIT, KMEANS_SEED, kmeans_scores
from magflow.evaluate.cross_mpp import LabelledTiles, cross_mpp_matrix
from magflow.evaluate.data import EvalData, mpp_key
from magflow.evaluate.knn import KNN_K, KNN_METRIC, KNN_WEIGHTS
from magflow.evaluate.label_metrics import label_metrics
from magflow.evaluate.linear_probe import (C_GRID, PAPER_BATCH, PAPER_EPOCHS, PAPER_LOSS, PAPER_LR, PAPER_OPTIMIZER,
                                           PAPER_PATIENCE, PROBE_CLASS_WEIGHT, PROBE_MAX_ITER, PROBE_SOLVER,
                                           PROBE_TOL)
from magflow.evaluate.outcome import MetricResult, MetricSkipped
from magflow.evaluate.settings import EvalContext
from magflow.evaluate.split_plan import SplitPlan, plan_splits, require_labels, rows_problem

PROBE_CONSTANTS = {"knn": {"k": KNN_K, "metric": KNN_METRIC, "weights": KNN_WEIGHTS, "reference": "train + val"},
                   "linear": {"solver": PROBE_SOLVER, "max_iter": PROBE_MAX_ITER, "tol": PROBE_TOL,
                              "class_weight": PROBE_CLASS_WEIGHT, "c_grid": list(C_GRID),
                              "c_chosen_by": "val balanced accuracy, then refit on train + val",
                              "scaling": "StandardScaler"}}


def probe_constants(probe: str) -> dict[str, Any]:
    """The probes' constants, the linear probe's for ``probe`` (``evaluate.probe``); each names its probe."""
    if probe == "logistic":
        return {"knn": PROBE_CONSTANTS["knn"], "linear": {"probe": "logistic", **PROBE_CONSTANTS["linear"]}}
    return {"knn": PROBE_CONSTANTS["knn"],
            "linear": {"probe": probe, "layer": "one nn.Linear on the raw embeddings", "optimizer": PAPER_OPTIMIZER,
                       "lr": PAPER_LR, "batch_size": PAPER_BATCH, "loss": PAPER_LOSS, "epochs_max": PAPER_EPOCHS,
                       "patience": PAPER_PATIENCE, "kept": "the epoch with the lowest val cross-entropy",
                       "seed": "the split's seed"}}


def probe_ready(data: EvalData, plan: SplitPlan) -> tuple[dict[float, np.ndarray], dict[str, str]]:
    """(mpp → labelled rows that every split can probe, mpp → why it is left out)."""
    ready, left_out = {}, {}
    for m in data.mpps:
        rows = data.labelled(m)
        problem = rows_problem(data.labels[rows], data.slides[rows], plan.splits) if len(rows) else "no labelled tile"
        if problem:
            left_out[mpp_key(m)] = problem
        else:
            ready[m] = rows
    if not ready:
        raise MetricSkipped("no mpp can be probed on every split: " + "; ".join(f"{k} mpp: {v}"
                                                                               for k, v in left_out.items()))
    return ready, left_out


def _summary(summary: ScoreSummary, names: list[str]) -> dict[str, Any]:
    return {"balanced_accuracy": summary.balanced_accuracy, "macro_f1": summary.macro_f1,
            "per_class_f1": {names[c] if 0 <= c < len(names) else str(c): s for c, s in summary.per_class_f1.items()}}


def probes(data: EvalData, context: EvalContext) -> MetricResult:
    plan = plan_splits(data, context)
    if context.settings.protocol == CMS:
        return cms_probes(data, plan)
    ready, left_out = probe_ready(data, plan)
    per_mpp = {}
    for m, rows in ready.items():
        scores = label_metrics(data.features(m, rows), data.labels[rows], data.slides[rows], plan.splits,
                               probe=context.settings.probe)
        per_mpp[mpp_key(m)] = {"n": len(rows), "knn": _summary(scores.knn_summary, data.class_names),
                               "linear": _summary(scores.linear_summary, data.class_names),
                               "per_seed": {"knn": scores.knn, "linear": scores.linear}}
    result = {"mpps": list(ready), "left_out": left_out, "split": plan.describe(), "scores": per_mpp,
              "probe": context.settings.probe}
    return MetricResult(result, plan.seeds, probe_constants(context.settings.probe))


def cms_probes(data: EvalData, plan: SplitPlan) -> MetricResult:
    """``protocol: cms`` on the eval tiles: each split (train / val / test) is a fold (train / dev / test)."""
    train_mpps = [m for m in data.mpps if any(np.isclose(m, s) for s in CMS_TRAIN_MPPS)]
    if not train_mpps:
        raise MetricSkipped(f"protocol cms fits on the standard mpps {list(CMS_TRAIN_MPPS)}; the embeddings have "
                            f"{data.mpps}")
    rows = np.flatnonzero(data.labels >= 0)
    slides = data.slides[rows]
    folds = {}
    for split in plan.splits:
        part = np.full(len(rows), "", dtype=object)
        for name, members in (("train", split.train), ("dev", split.val), ("test", split.test)):
            part[np.isin(slides, list(members))] = name
        folds[f"seed_{split.seed}"] = part.astype(str)
    try:
        result = cms_protocol({m: data.features(m, rows) for m in data.mpps}, data.labels[rows], folds,
                              present={m: data.usable(m)[rows] for m in data.mpps}, groups=slides,
                              train_mpps=train_mpps)
    except ValueError as error:
        raise MetricSkipped(f"protocol cms: {error}") from None
    out = {**result.as_result(), "split": plan.describe(), "left_out": {}}
    return MetricResult(out, plan.seeds, {**CMS_CONSTANTS, "train_mpps": train_mpps})


def cross_mpp(data: EvalData, context: EvalContext) -> MetricResult:
    plan = plan_splits(data, context)
    ready, left_out = probe_ready(data, plan)
    tiles = {m: LabelledTiles(data.features(m, r), data.labels[r], data.slides[r]) for m, r in ready.items()}
    matrix = cross_mpp_matrix(tiles, plan.splits)
    out: dict[str, Any] = {"mpps": list(matrix.mpps), "left_out": left_out, "split": plan.describe(),
                           "axes": "[train mpp, test mpp]", "chosen_c": matrix.chosen_c}
    for score in ("balanced_accuracy", "macro_f1"):
        values = getattr(matrix, score)
        mean, std = matrix.mean_std(values)
        kept = matrix.retained(score)
        kept_mean, kept_std = matrix.mean_std(kept)
        out[score] = {"mean": mean, "std": std, "per_seed": values,
                      "retained_percent": {"mean": kept_mean, "std": kept_std, "per_seed": kept}}
    constants = {"linear": PROBE_CONSTANTS["linear"],
                 "retained_percent": "accuracy retained %: 100 · score(train a, test b) / score(train a, test a), "
                                     "per seed (not the MAD paper's mIoU-based consistency %)"}
    return MetricResult(out, plan.seeds, constants)


def clustering(data: EvalData, context: EvalContext) -> MetricResult:
    require_labels(data)
    per_mpp, left_out = {}, {}
    for m in data.mpps:
        rows = data.labelled(m)
        k = len(np.unique(data.labels[rows]))
        if k < 2 or len(rows) <= k:
            left_out[mpp_key(m)] = f"{len(rows)} labelled tiles in {k} classes (need two classes, more tiles than classes)"
            continue
        scores = kmeans_scores(data.features(m, rows), data.labels[rows])
        per_mpp[mpp_key(m)] = {"n": len(rows), "ami": scores.ami, "davies_bouldin": scores.davies_bouldin,
                               "davies_bouldin_classes": scores.davies_bouldin_classes, "k": scores.n_clusters}
    if not per_mpp:
        raise MetricSkipped("no mpp has enough labelled tiles: " + "; ".join(f"{k} mpp: {v}" for k, v in left_out.items()))
    result = {"mpps": [float(k) for k in per_mpp], "left_out": left_out, "scores": per_mpp}
    return MetricResult(result, [KMEANS_SEED], {"kmeans_seed": KMEANS_SEED, "n_init": KMEANS_N_INIT,
                                                "k": "number of classes among the mpp's labelled tiles",
                                                "features": "L2-normalised"})
