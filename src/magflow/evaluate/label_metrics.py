"""kNN and linear probe at one mpp over several seeded slide splits, with mean ± std."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from magflow.evaluate.classification import ClassificationScores, ScoreSummary, summarize
from magflow.evaluate.knn import KNN_K, knn_scores
from magflow.evaluate.linear_probe import C_GRID, linear_probe_scores
from magflow.evaluate.splits import SlideSplit


@dataclass(frozen=True)
class LabelMetrics:
    seeds: tuple[int, ...]
    knn: tuple[ClassificationScores, ...]     # one per seed
    linear: tuple[ClassificationScores, ...]  # one per seed
    knn_summary: ScoreSummary
    linear_summary: ScoreSummary


def label_metrics(x: ArrayLike, y: ArrayLike, slides: ArrayLike, splits: Sequence[SlideSplit],
                  k: int = KNN_K, c_grid: Sequence[float] = C_GRID, probe: str = "logistic") -> LabelMetrics:
    """kNN and linear-probe scores of one mpp's embeddings on every split (made by ``seeded_splits``).

    ``probe`` is the linear probe (``evaluate.probe``: ``logistic`` or ``paper-linear``, seeded by the
    split's seed). Per-class F1 covers every class in ``y``.
    """
    x, y = np.asarray(x), np.asarray(y)
    classes = np.unique(y)
    knn, linear = [], []
    for split in splits:
        rows = split.rows(slides)
        knn.append(knn_scores(x, y, rows, k, classes))
        linear.append(linear_probe_scores(x, y, rows, c_grid, classes, probe=probe, seed=split.seed))
    return LabelMetrics(tuple(s.seed for s in splits), tuple(knn), tuple(linear),
                        summarize(knn), summarize(linear))
