"""``protocol: cms``: the continuous-magnification authors' probe protocol, on plain arrays.

As their released evaluation does it (``evaluate_benchmarks.py`` and ``dataloaders.py``):

- Per fold, the rows of the *train mpps* (0.25, 0.5, 1 and 2) are pooled: the probes are fitted on
  the pooled train rows, and k and C are chosen by balanced accuracy on the pooled dev rows (the dev
  images at the same four mpps). The chosen probe is the one fitted on the train rows alone (dev is
  never added) and is scored on the test rows at every mpp separately.
- kNN: ``KNeighborsClassifier(n_neighbors=k, metric="cosine")``, uniform weights, so a majority vote;
  a tied vote goes to the smallest label (scikit-learn's argmax over its sorted classes), and no
  feature normalisation is needed (the cosine distance ignores norms). k ∈ {1, 3, 5, 10, 20, 40, 80}.
- Logistic regression: ``LogisticRegression(C, solver="lbfgs", multi_class="multinomial",
  class_weight="balanced", max_iter=1000, random_state=42)`` on the raw features (no scaling);
  C ∈ logspace(−4, 4, 9).
- A tie in dev balanced accuracy goes to the first value of the grid, the smallest k or C (they take
  ``max`` over the results in grid order).
- Scores per mpp: accuracy, balanced accuracy, macro-F1 and weighted F1 (scikit-learn); over folds
  the mean and the population std (``np.std``, ddof 0).

Two differences, both recorded. Candidates k larger than a fold's train rows are left out (their
code would fail). scikit-learn ≥ 1.8 has no ``multi_class``: with three or more classes lbfgs fits
the multinomial loss anyway, and for two classes the authors' two-class softmax equals a binomial fit
with C doubled (the softmax splits the weight difference w between two vectors ±w/2, so its penalty
is |w|²/4 instead of |w|²/2), so two-class problems are fitted at 2C and recorded at C.

On an embeddings file (``evaluate.protocol: cms``), :func:`cms_probes` makes each slide split a fold and
writes the ``probes`` record; the benchmarks call :func:`cms_protocol` on their own folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier

from magflow.evaluate.data import EvalData
from magflow.evaluate.record import MetricResult, MetricSkipped

if TYPE_CHECKING:
    from magflow.evaluate.split_plan import SplitPlan

PROTOCOL = "cms"
CMS_TRAIN_MPPS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
CMS_TEST_MPPS: tuple[float, ...] = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)
CMS_K_GRID: tuple[int, ...] = (1, 3, 5, 10, 20, 40, 80)
CMS_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 9))
CMS_KNN_METRIC = "cosine"
CMS_SOLVER = "lbfgs"
CMS_MAX_ITER = 1000
CMS_CLASS_WEIGHT = "balanced"
CMS_RANDOM_STATE = 42
CMS_STD_DDOF = 0
PROBES = ("knn", "linear")
METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "weighted_f1")
TRAIN, DEV, TEST = "train", "dev", "test"

CMS_CONSTANTS: dict[str, Any] = {
    "train_mpps": list(CMS_TRAIN_MPPS),
    "knn": {"k_grid": list(CMS_K_GRID), "metric": CMS_KNN_METRIC, "weights": "uniform (majority vote)",
            "vote_ties": "smallest label", "fit": "pooled train rows of the train mpps"},
    "linear": {"c_grid": CMS_C_GRID, "solver": CMS_SOLVER, "loss": "multinomial (two classes: binomial at 2C)",
               "class_weight": CMS_CLASS_WEIGHT, "max_iter": CMS_MAX_ITER, "random_state": CMS_RANDOM_STATE,
               "scaling": "none", "fit": "pooled train rows of the train mpps"},
    "chosen_by": "balanced accuracy on the pooled dev rows of the train mpps; ties: the smallest k or C",
    "scored": "the probe fitted on train rows only, on the test rows of each mpp",
    "std_ddof": CMS_STD_DDOF,
}


@dataclass(frozen=True)
class ProbeFold:
    """One probe on one fold: the chosen k or C, the dev score of every candidate, the test scores per mpp."""

    chosen: float
    dev_balanced_accuracy: dict[float, float]
    test: dict[float, dict[str, float]]  # mpp → metric → score
    skipped: dict[float, str] = field(default_factory=dict)  # candidate → why it was not tried
    converged: bool = True


@dataclass(frozen=True)
class CmsResult:
    train_mpps: tuple[float, ...]
    test_mpps: tuple[float, ...]
    folds: dict[str, dict[str, Any]]  # fold → rows per part (and the groups of each part, when given)
    probes: dict[str, dict[str, ProbeFold]]  # probe → fold → result

    def chosen(self, probe: str) -> dict[str, float]:
        """Fold → the chosen k (kNN) or C (linear)."""
        return {fold: r.chosen for fold, r in self.probes[probe].items()}

    def summary(self, probe: str) -> dict[float, dict[str, dict[str, float]]]:
        """mpp → metric → mean, std (ddof 0) and n over the folds."""
        out = {}
        for m in self.test_mpps:
            values = {metric: [r.test[m][metric] for r in self.probes[probe].values() if m in r.test]
                      for metric in METRICS}
            out[m] = {metric: {"mean": float(np.mean(v)) if v else float("nan"),
                               "std": float(np.std(v, ddof=CMS_STD_DDOF)) if v else float("nan"), "n": len(v)}
                      for metric, v in values.items()}
        return out

    def as_result(self) -> dict[str, Any]:
        """The record's ``result``: ``scores`` per mpp in the layout of the ``magflow`` probes record, plus the
        folds, the chosen k and C per fold, every candidate's dev score and the per-fold test scores."""
        key = _key
        scores = {key(m): {p: {metric: cell for metric, cell in self.summary(p)[m].items()} for p in self.probes}
                  for m in self.test_mpps}
        return {"protocol": PROTOCOL, "mpps": list(self.test_mpps), "train_mpps": list(self.train_mpps),
                "folds": self.folds, "scores": scores,
                "chosen": {p: self.chosen(p) for p in self.probes},
                "per_fold": {p: {fold: {"chosen": r.chosen, "converged": r.converged,
                                        "dev_balanced_accuracy": {f"{c:g}": s for c, s in r.dev_balanced_accuracy.items()},
                                        "skipped": {f"{c:g}": why for c, why in r.skipped.items()},
                                        "test": {key(m): s for m, s in r.test.items()}}
                                 for fold, r in folds.items()} for p, folds in self.probes.items()}}


def cms_protocol(features: Mapping[float, ArrayLike], labels: ArrayLike,
                 folds: Mapping[str, ArrayLike], *, present: Mapping[float, ArrayLike] | None = None,
                 groups: ArrayLike | None = None, train_mpps: Sequence[float] = CMS_TRAIN_MPPS,
                 test_mpps: Sequence[float] | None = None, probes: Sequence[str] = PROBES,
                 k_grid: Sequence[int] = CMS_K_GRID, c_grid: Sequence[float] = CMS_C_GRID) -> CmsResult:
    """The authors' protocol on N images embedded at several mpps.

    ``features``: mpp → N×D array, row i the same image at every mpp; ``labels``: N class labels;
    ``folds``: fold name → N parts, each ``train``, ``dev``, ``test`` or anything else (in no part);
    ``present``: mpp → N booleans, whether row i has an embedding at that mpp (default: all);
    ``groups``: N group ids (slide or patient), only recorded per fold; ``test_mpps``: default every mpp
    of ``features``.
    """
    mpps = sorted(float(m) for m in features)
    x = {float(m): np.asarray(v) for m, v in features.items()}
    y = np.asarray(labels)
    n = len(y)
    test = tuple(sorted(float(m) for m in (test_mpps if test_mpps is not None else mpps)))
    train = tuple(sorted(float(m) for m in train_mpps))
    missing = [m for m in (*train, *test) if m not in x]
    if missing:
        raise ValueError(f"the cms protocol needs embeddings at {sorted(set(missing))} mpp; have {mpps}")
    unknown = sorted(set(probes) - set(PROBES))
    if unknown or not probes:
        raise ValueError(f"probes must be among {PROBES}, got {list(probes)}")
    for m, v in x.items():
        if v.ndim != 2 or len(v) != n:
            raise ValueError(f"features at {m:g} mpp must be an N×D array with one row per label ({n}), got {v.shape}")
    have = {m: np.ones(n, bool) if present is None or m not in present else np.asarray(present[m], bool) for m in x}
    parts = {str(name): np.asarray(p).astype(str) for name, p in folds.items()}
    if not parts or any(len(p) != n for p in parts.values()):
        raise ValueError(f"folds must give one part per row ({n}) for at least one fold")
    g = None if groups is None else np.asarray(groups).astype(str)

    fold_info: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, ProbeFold]] = {p: {} for p in probes}
    for name, part in parts.items():
        def rows(which: str, m: float) -> np.ndarray:
            return np.flatnonzero((part == which) & have[m])

        tx, ty = _pooled(x, y, [rows(TRAIN, m) for m in train], train)
        dx, dy = _pooled(x, y, [rows(DEV, m) for m in train], train)
        tests = {m: rows(TEST, m) for m in test}
        if len(dy) == 0 or len(np.unique(ty)) < 2 or not any(len(r) for r in tests.values()):
            raise ValueError(f"fold {name}: the cms protocol needs dev rows, two classes among the train rows and "
                             f"test rows (have {len(ty)} train, {len(dy)} dev rows at {list(train)} mpp)")
        fold_info[name] = _describe_fold(part, g)
        for probe in probes:
            fit = _knn if probe == "knn" else _linear
            grid = k_grid if probe == "knn" else c_grid
            results[probe][name] = fit(tx, ty, dx, dy, {m: (x[m][r], y[r]) for m, r in tests.items() if len(r)}, grid)
    return CmsResult(train, test, fold_info, results)


def _key(mpp: float) -> str:
    return f"{float(mpp):g}"


def _pooled(x: Mapping[float, np.ndarray], y: np.ndarray, rows: list[np.ndarray],
            mpps: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([x[m][r] for m, r in zip(mpps, rows)]).astype(np.float64),
            np.concatenate([y[r] for r in rows]))


def _describe_fold(part: np.ndarray, groups: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {which: int((part == which).sum()) for which in (TRAIN, DEV, TEST)}
    if groups is not None:
        out["groups"] = {which: sorted(set(groups[part == which].tolist())) for which in (TRAIN, DEV, TEST)}
    return out


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The four scores the authors report for one prediction."""
    return {"balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
            "weighted_f1": float(f1_score(y_true, y_pred, average="weighted"))}


def _choose(candidates: Sequence[float], fitted: Mapping[float, Any], dx: np.ndarray,
            dy: np.ndarray) -> tuple[float, dict[float, float]]:
    dev = {c: float(balanced_accuracy_score(dy, fitted[c].predict(dx))) for c in candidates}
    best = max(candidates, key=lambda c: dev[c])  # the first maximum in grid order
    return best, dev


def _knn(tx: np.ndarray, ty: np.ndarray, dx: np.ndarray, dy: np.ndarray,
         tests: Mapping[float, tuple[np.ndarray, np.ndarray]], grid: Sequence[float]) -> ProbeFold:
    usable = [int(k) for k in grid if int(k) <= len(ty)]
    skipped = {float(k): f"k > the {len(ty)} train rows" for k in grid if int(k) > len(ty)}
    if not usable:
        raise ValueError(f"no k of {list(grid)} fits the {len(ty)} train rows")
    fitted = {k: KNeighborsClassifier(n_neighbors=k, metric=CMS_KNN_METRIC).fit(tx, ty) for k in usable}
    best, dev = _choose(usable, fitted, dx, dy)
    model = fitted[best]
    return ProbeFold(float(best), {float(k): s for k, s in dev.items()},
                     {m: scores(ey, model.predict(ex)) for m, (ex, ey) in tests.items()}, skipped)


def make_logistic(c: float, n_classes: int) -> LogisticRegression:
    """The authors' logistic regression at C = c (two classes: the binomial fit equal to their softmax, 2c)."""
    return LogisticRegression(C=2 * c if n_classes == 2 else c, solver=CMS_SOLVER, max_iter=CMS_MAX_ITER,
                              class_weight=CMS_CLASS_WEIGHT, random_state=CMS_RANDOM_STATE)


def _linear(tx: np.ndarray, ty: np.ndarray, dx: np.ndarray, dy: np.ndarray,
            tests: Mapping[float, tuple[np.ndarray, np.ndarray]], grid: Sequence[float]) -> ProbeFold:
    n_classes = len(np.unique(ty))
    fitted = {float(c): make_logistic(float(c), n_classes).fit(tx, ty) for c in grid}
    best, dev = _choose(list(fitted), fitted, dx, dy)
    model = fitted[best]
    return ProbeFold(best, dev, {m: scores(ey, model.predict(ex)) for m, (ex, ey) in tests.items()},
                     converged=bool(np.all(model.n_iter_ < CMS_MAX_ITER)))


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
