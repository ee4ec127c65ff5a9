"""The cross-magnification generalisation matrix: a probe trained at mpp a, tested at mpp b.

For every split and every training mpp a, one linear probe is fitted on a's train/val slides (C chosen
at a) and scored on the test slides at every mpp b; the same slide split is used at every mpp, so
no test slide is ever seen in training. Scores are balanced accuracy and macro-F1.

Accuracy retained % is the fraction of the probe's own same-mpp score that it keeps at another mpp:

    retained[a, b] = 100 · score(train a, test b) / score(train a, test a),

computed per seed (the same split in numerator and denominator) before taking mean ± std. The
diagonal is 100 by construction. Dividing by score(train b, test b) would instead measure the gap
to a native probe at b; that is the matrix's own diagonal, readable from the scores.

This is not the MAD paper's consistency % (its Table 5: 40× mIoU / 10× mIoU of a segmentation probe
trained at 10×, 96.7%), which ``magflow.evaluate.mad_tables`` computes; this ratio of tile-probe
scores is recorded as ``retained_percent``.

The ``cross_mpp`` record (:func:`cross_mpp`) uses the mpps that every split can probe
(``magflow.evaluate.probes.probe_ready``) and the model's slide splits (``magflow.evaluate.split_plan``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import balanced_accuracy_score, f1_score

from magflow.evaluate.data import EvalData
from magflow.evaluate.probes import C_GRID, PROBE_CONSTANTS, STD_DDOF, fit_probe_on_split, probe_ready
from magflow.evaluate.record import MetricResult
from magflow.evaluate.split_plan import plan_splits
from magflow.evaluate.splits import SlideSplit

if TYPE_CHECKING:
    from magflow.evaluate.settings import EvalContext


@dataclass(frozen=True)
class LabelledTiles:
    """One mpp's tiles: embeddings (N×D), integer labels and slide ids, one per row."""

    embeddings: ArrayLike
    labels: ArrayLike
    slides: ArrayLike


@dataclass(frozen=True)
class CrossMpp:
    """Scores indexed [seed, train mpp, test mpp]."""

    mpps: tuple[float, ...]
    seeds: tuple[int, ...]
    balanced_accuracy: NDArray[np.float64]
    macro_f1: NDArray[np.float64]
    chosen_c: NDArray[np.float64]  # [seed, train mpp]

    def retained(self, score: str = "balanced_accuracy") -> NDArray[np.float64]:
        """Accuracy retained % per seed, [seed, train mpp, test mpp]."""
        return retained_percent(getattr(self, score))

    def mean_std(self, values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and sample std over seeds of a [seed, a, b] array."""
        std = values.std(axis=0, ddof=STD_DDOF) if len(values) > STD_DDOF else np.zeros(values.shape[1:])
        return values.mean(axis=0), std


def retained_percent(scores: ArrayLike) -> NDArray[np.float64]:
    """100 · S[..., a, b] / S[..., a, a]: how much of its same-mpp score a probe keeps at b."""
    s = np.asarray(scores, dtype=np.float64)
    diagonal = np.diagonal(s, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * s / diagonal[..., :, None]


def cross_mpp_matrix(tiles: Mapping[float, LabelledTiles], splits: Sequence[SlideSplit],
                     c_grid: Sequence[float] = C_GRID) -> CrossMpp:
    """Train at every mpp, test at every mpp, for every split."""
    mpps = tuple(sorted(tiles))
    data = {m: (np.asarray(t.embeddings), np.asarray(t.labels), [split.rows(t.slides) for split in splits])
            for m, t in tiles.items()}
    shape = (len(splits), len(mpps), len(mpps))
    bacc, f1, chosen = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape[:2], np.nan)
    for s in range(len(splits)):
        for a, train_mpp in enumerate(mpps):
            x, y, rows = data[train_mpp]
            probe = fit_probe_on_split(x, y, rows[s], c_grid)
            chosen[s, a] = probe.c
            for b, test_mpp in enumerate(mpps):
                xt, yt, rows_t = data[test_mpp]
                test = rows_t[s].test
                predicted = probe.predict(xt[test])
                bacc[s, a, b] = balanced_accuracy_score(yt[test], predicted)
                f1[s, a, b] = f1_score(yt[test], predicted, average="macro")
    return CrossMpp(mpps, tuple(sp.seed for sp in splits), bacc, f1, chosen)


def cross_mpp(data: EvalData, context: EvalContext) -> MetricResult:
    """The ``cross_mpp`` record: the matrix, its mean ± std over the splits and the accuracy retained."""
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
