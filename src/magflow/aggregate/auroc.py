"""Slide-level AUROC that is NaN with a reason, never a crash, when a test set cannot define it.

Binary tasks score the probability of class 1 (scikit-learn's ``roc_auc_score``). Multi-class tasks
use one-vs-rest macro AUROC over the classes present in the test set: when every class is present
this is exactly scikit-learn's ``multi_class="ovr", average="macro"``; when some are absent, they
are left out of the average and the reason says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class Auroc:
    value: float       # NaN when undefined
    reason: str = ""   # why it is undefined, or what was left out of the average; empty when neither


def slide_auroc(labels: ArrayLike, probs: ArrayLike) -> Auroc:
    """AUROC of class probabilities ``probs`` (n×C, rows sum to 1) against integer ``labels`` (n)."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] < 2:
        raise ValueError(f"probs must be n×C with C ≥ 2 and one row per label; got {p.shape} for {y.shape[0]} labels")
    present = np.unique(y)
    if len(present) < 2:
        return Auroc(float("nan"), f"AUROC is undefined: the {len(y)} held-out slide(s) all have class "
                                   f"{present.tolist()} (add slides of other classes to the test split)")
    n_classes = p.shape[1]
    if n_classes == 2:
        return Auroc(float(roc_auc_score(y, p[:, 1])))
    if len(present) == n_classes:
        return Auroc(float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(n_classes))))
    absent = sorted(set(range(n_classes)) - set(present.tolist()))
    value = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
    return Auroc(value, f"class(es) {absent} absent from the held-out slides: macro AUROC over {present.tolist()}")
