"""The scores every label-based metric reports, and their mean ± std over seeds.

- balanced accuracy: the mean recall over the classes present in the truth (scikit-learn).
- macro-F1: the mean F1 over the classes present in the truth or the predictions (scikit-learn's
  default label set), so a class absent from a test split does not count as a zero.
- per-class F1: for every class of ``classes``; NaN for a class neither present nor predicted.
- over seeds: mean and sample standard deviation (ddof = 1); per-class values ignore NaN seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import balanced_accuracy_score, f1_score

STD_DDOF = 1  # sample standard deviation over seeds


@dataclass(frozen=True)
class ClassificationScores:
    balanced_accuracy: float
    macro_f1: float
    per_class_f1: dict[int, float]
    n_train: int
    n_test: int


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float
    n: int  # seeds that contributed

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"


@dataclass(frozen=True)
class ScoreSummary:
    balanced_accuracy: MeanStd
    macro_f1: MeanStd
    per_class_f1: dict[int, MeanStd]


def classification_scores(y_true: ArrayLike, y_pred: ArrayLike, classes: ArrayLike | None = None,
                          n_train: int = 0) -> ClassificationScores:
    """Balanced accuracy, macro-F1 and per-class F1 of one prediction."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise ValueError("y_true and y_pred must be non-empty 1-d arrays of one length")
    labels = np.union1d(t, p) if classes is None else np.asarray(classes)
    per_class = f1_score(t, p, labels=labels, average=None, zero_division=np.nan)
    return ClassificationScores(
        balanced_accuracy=float(balanced_accuracy_score(t, p)),
        macro_f1=float(f1_score(t, p, average="macro")),
        per_class_f1={int(c): float(f) for c, f in zip(labels, per_class)},
        n_train=int(n_train),
        n_test=int(t.size),
    )


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample std of the non-NaN values (std 0 for a single value, NaN for none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return MeanStd(float("nan"), float("nan"), 0)
    std = float(np.std(v, ddof=STD_DDOF)) if v.size > STD_DDOF else 0.0
    return MeanStd(float(np.mean(v)), std, int(v.size))


def summarize(scores: Sequence[ClassificationScores]) -> ScoreSummary:
    """Mean ± std over seeds of every score."""
    classes = sorted({c for s in scores for c in s.per_class_f1})
    return ScoreSummary(
        balanced_accuracy=mean_std([s.balanced_accuracy for s in scores]),
        macro_f1=mean_std([s.macro_f1 for s in scores]),
        per_class_f1={c: mean_std([s.per_class_f1.get(c, np.nan) for s in scores]) for c in classes},
    )
