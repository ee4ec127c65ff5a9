"""Linear probe: L2-regularised multinomial logistic regression on standardised features.

One documented solver: scikit-learn ``LogisticRegression(solver="lbfgs", max_iter=1000, tol=1e-4,
class_weight="balanced")`` after a ``StandardScaler``; for more than two classes lbfgs minimises the
multinomial (softmax) loss. ``class_weight="balanced"`` weights each class by n / (n_classes · n_c),
so the training objective matches the balanced accuracy that is reported (as in the continuous
magnification benchmark code).

Regularisation: C is chosen from the fixed grid 1e-4, 1e-3, …, 1e2 (seven values) by balanced
accuracy on the validation split (ties go to the smaller C, the stronger regularisation); scaler
and classifier are then refitted on train + val with that C and scored once on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from magflow.evaluate.classification import ClassificationScores, classification_scores
from magflow.evaluate.splits import Split

C_GRID: tuple[float, ...] = tuple(10.0 ** e for e in range(-4, 3))  # 1e-4 … 1e2
PROBE_SOLVER = "lbfgs"
PROBE_MAX_ITER = 1000
PROBE_TOL = 1e-4
PROBE_CLASS_WEIGHT = "balanced"


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: predict with :meth:`predict` on embeddings of any mpp."""

    model: Pipeline
    c: float
    val_balanced_accuracy: dict[float, float]  # per C of the grid
    converged: bool                            # lbfgs stopped before max_iter in the final fit
    n_train: int                               # rows of the final fit (train + val)

    def predict(self, x: ArrayLike) -> np.ndarray:
        return self.model.predict(np.asarray(x, dtype=np.float64))


def make_probe(c: float) -> Pipeline:
    """StandardScaler → LogisticRegression with the constants above and inverse regularisation c."""
    return make_pipeline(StandardScaler(), LogisticRegression(
        C=c, solver=PROBE_SOLVER, max_iter=PROBE_MAX_ITER, tol=PROBE_TOL, class_weight=PROBE_CLASS_WEIGHT))


def fit_linear_probe(train_x: ArrayLike, train_y: ArrayLike, val_x: ArrayLike, val_y: ArrayLike,
                     c_grid: Sequence[float] = C_GRID) -> LinearProbe:
    """Choose C on validation, then refit on train + val."""
    tx, vx = np.asarray(train_x, dtype=np.float64), np.asarray(val_x, dtype=np.float64)
    ty, vy = np.asarray(train_y), np.asarray(val_y)
    if len(vy) == 0 or len(np.unique(ty)) < 2:
        raise ValueError("the probe needs a non-empty validation split and at least two training classes")
    val_scores = {}
    for c in sorted(c_grid):
        val_scores[c] = float(balanced_accuracy_score(vy, make_probe(c).fit(tx, ty).predict(vx)))
    best = max(val_scores, key=lambda c: (val_scores[c], -c))
    model = make_probe(best).fit(np.concatenate([tx, vx]), np.concatenate([ty, vy]))
    converged = bool(np.all(model[-1].n_iter_ < PROBE_MAX_ITER))
    return LinearProbe(model, best, val_scores, converged, len(ty) + len(vy))


def fit_probe_on_split(x: ArrayLike, y: ArrayLike, split: Split,
                       c_grid: Sequence[float] = C_GRID) -> LinearProbe:
    """:func:`fit_linear_probe` on the train and val rows of ``split``."""
    x, y = np.asarray(x), np.asarray(y)
    return fit_linear_probe(x[split.train], y[split.train], x[split.val], y[split.val], c_grid)


def linear_probe_scores(x: ArrayLike, y: ArrayLike, split: Split, c_grid: Sequence[float] = C_GRID,
                        classes: ArrayLike | None = None) -> ClassificationScores:
    """Probe fitted on the split's train/val rows, scored on its test rows."""
    x, y = np.asarray(x), np.asarray(y)
    probe = fit_probe_on_split(x, y, split, c_grid)
    return classification_scores(y[split.test], probe.predict(x[split.test]), classes, probe.n_train)
