"""The ``probes`` family: kNN and linear probes per mpp over seeded slide splits, and what they share.

One module for every piece a probe score is made of, in this order: the classification scores and
their mean ± std over seeds; kNN; the linear probes (``logistic``, the default, and ``paper-linear``,
the MAD paper's) and the choice between them (``fit_probe``, ``evaluate.probe``); both probes on
every split of one mpp (:func:`label_metrics`); why a split cannot be probed; and the ``probes``
record of an embeddings file (:func:`probes`). The cross-mpp matrix and segmentation fit the same
linear probe (``magflow.evaluate.cross_mpp``, ``magflow.evaluate.segmentation``).

Every mpp uses its labelled tiles with a view there, and the same slide splits (see
``magflow.evaluate.split_plan``). An mpp whose tiles cannot be probed on some split (no val or test
tile, one class, fewer than k reference tiles) is left out with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from magflow.defaults import default
from magflow.evaluate.cms import PROTOCOL as CMS
from magflow.evaluate.cms import cms_probes
from magflow.evaluate.data import EvalData, l2_normalize, mpp_key
from magflow.evaluate.probe_names import check_probe
from magflow.evaluate.record import MetricResult, MetricSkipped
from magflow.evaluate.split_plan import SplitPlan, plan_splits
from magflow.evaluate.splits import SlideSplit, Split

if TYPE_CHECKING:  # torch is imported when a paper-linear probe is fitted, not with this module
    import torch

    from magflow.evaluate.settings import EvalContext


# --- Classification scores ------------------------------------------------------------------------
#
# The scores every label-based metric reports, and their mean ± std over seeds.
#
# - balanced accuracy: the mean recall over the classes present in the truth (scikit-learn).
# - macro-F1: the mean F1 over the classes present in the truth or the predictions (scikit-learn's
#   default label set), so a class absent from a test split does not count as a zero.
# - per-class F1: for every class of ``classes``; NaN for a class neither present nor predicted.
# - over seeds: mean and sample standard deviation (ddof = 1); per-class values ignore NaN seeds.

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


# --- kNN ------------------------------------------------------------------------------------------
#
# kNN classification: k = 20 nearest training tiles by cosine similarity, uniform vote.
#
# Features are L2-normalised first (so cosine similarity is the dot product), then scikit-learn's
# ``KNeighborsClassifier(n_neighbors=20, metric="cosine", weights="uniform", algorithm="brute")``
# votes. kNN has no hyperparameter to tune, so its reference set is train + val of a split.
#
# Ties: a tied vote goes to the smallest class label (scikit-learn takes the argmax over its sorted
# classes). Tiles at exactly the same distance as the k-th neighbour are broken by the brute-force
# partial sort, which is deterministic for a given input but not specified; with real-valued
# embeddings such ties do not occur in practice.

KNN_K = 20
KNN_METRIC = "cosine"
KNN_WEIGHTS = "uniform"


def knn_predict(train_x: ArrayLike, train_y: ArrayLike, query_x: ArrayLike, k: int = KNN_K) -> np.ndarray:
    """The majority label among the k most cosine-similar training rows of each query row."""
    train = l2_normalize(train_x)
    if not 1 <= k <= len(train):
        raise ValueError(f"k = {k} needs 1 ≤ k ≤ the {len(train)} training rows")
    model = KNeighborsClassifier(n_neighbors=k, metric=KNN_METRIC, weights=KNN_WEIGHTS, algorithm="brute")
    model.fit(train, np.asarray(train_y))
    return model.predict(l2_normalize(query_x))


def knn_scores(x: ArrayLike, y: ArrayLike, split: Split, k: int = KNN_K,
               classes: ArrayLike | None = None) -> ClassificationScores:
    """kNN fitted on train + val, scored on test."""
    x, y = np.asarray(x), np.asarray(y)
    reference = np.concatenate([split.train, split.val])
    predicted = knn_predict(x[reference], y[reference], x[split.test], k)
    return classification_scores(y[split.test], predicted, classes, n_train=len(reference))


# --- Linear probes --------------------------------------------------------------------------------
#
# Linear probes: ``logistic`` (the default, below) or ``paper-linear`` (the MAD paper's, next section).
#
# ``logistic``: L2-regularised multinomial logistic regression on standardised features.
#
# One documented solver: scikit-learn ``LogisticRegression(solver="lbfgs", max_iter=1000, tol=1e-4,
# class_weight="balanced")`` after a ``StandardScaler``; for more than two classes lbfgs minimises the
# multinomial (softmax) loss. ``class_weight="balanced"`` weights each class by n / (n_classes · n_c),
# so the training objective matches the balanced accuracy that is reported (as in the continuous
# magnification benchmark code).
#
# Regularisation: C is chosen from the fixed grid 1e-4, 1e-3, …, 1e2 (seven values) by balanced
# accuracy on the validation split (ties go to the smaller C, the stronger regularisation); scaler
# and classifier are then refitted on train + val with that C and scored once on test.

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


def fit_probe_on_split(x: ArrayLike, y: ArrayLike, split: Split, c_grid: Sequence[float] = C_GRID,
                       probe: str = "logistic", seed: int = 0) -> Probe:
    """The selected probe (default :func:`fit_linear_probe`) on the train and val rows of ``split``."""
    x, y = np.asarray(x), np.asarray(y)
    return fit_probe(probe, x[split.train], y[split.train], x[split.val], y[split.val], seed, c_grid)


def linear_probe_scores(x: ArrayLike, y: ArrayLike, split: Split, c_grid: Sequence[float] = C_GRID,
                        classes: ArrayLike | None = None, probe: str = "logistic",
                        seed: int = 0) -> ClassificationScores:
    """Probe fitted on the split's train/val rows, scored on its test rows."""
    x, y = np.asarray(x), np.asarray(y)
    probe = fit_probe_on_split(x, y, split, c_grid, probe, seed)
    return classification_scores(y[split.test], probe.predict(x[split.test]), classes, probe.n_train)


# --- The MAD paper's linear classifier (``probe: paper-linear``) -------------------------------------
#
# The MAD paper (Gokmen et al., arXiv 2512.14796) evaluates its embeddings with "a linear classifier"
# (its abstract: trained only on 10× embeddings it keeps 96.7% of its performance on 40× tiles). The
# classifier, as the paper describes it: one linear layer on the frozen embeddings,
# trained with Adam (lr 1e-4), batch size 64 and the cross-entropy loss. No epoch count is given, so
# this module trains for at most PAPER_EPOCHS epochs and keeps the weights of the epoch with the
# lowest validation cross-entropy, stopping after PAPER_PATIENCE epochs without improvement (with no
# validation rows it trains all epochs and keeps the last weights). Inputs are the raw embeddings (no scaling: the paper
# names none); Adam's other settings are torch's defaults (betas 0.9/0.999, eps 1e-8, no weight decay).
# A run's seed fixes the layer's initialisation and the batch order.

PAPER_OPTIMIZER = "Adam"
PAPER_LR = 1e-4
PAPER_BATCH = 64
PAPER_LOSS = "cross-entropy"
PAPER_EPOCHS = default("evaluate.mad.epochs")      # the paper gives none: magflow's choice, early stopping on val
PAPER_PATIENCE = default("evaluate.mad.patience")


def logistic_record(probe: LinearProbe) -> dict[str, object]:
    """What a logistic-regression probe was (for records)."""
    return {"probe": "logistic", "solver": PROBE_SOLVER, "max_iter": PROBE_MAX_ITER, "tol": PROBE_TOL,
            "class_weight": PROBE_CLASS_WEIGHT, "scaling": "StandardScaler", "c": probe.c,
            "c_chosen_by": "val balanced accuracy, then refit on train + val", "converged": probe.converged,
            "n_train": probe.n_train}


@dataclass(frozen=True)
class PaperLinearProbe:
    """A fitted paper linear classifier: ``layer`` maps an embedding to one logit per class in ``classes``."""

    layer: torch.nn.Linear
    classes: np.ndarray        # the label of each output, sorted
    seed: int
    epochs_max: int
    epochs_run: int
    best_epoch: int            # 1-based epoch whose weights are kept
    patience: int
    val_loss: list[float]      # per epoch run (empty without validation rows)
    n_train: int
    n_val: int

    def predict(self, x: ArrayLike) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.layer(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        return self.classes[logits.argmax(dim=1).numpy()]

    @property
    def record(self) -> dict[str, object]:
        return {"probe": "paper-linear", "layers": "one torch.nn.Linear (embedding → classes)",
                "optimizer": PAPER_OPTIMIZER, "lr": PAPER_LR, "batch_size": PAPER_BATCH, "loss": PAPER_LOSS,
                "scaling": "none", "seed": self.seed, "epochs_max": self.epochs_max, "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch, "patience": self.patience,
                "early_stopping": "lowest val cross-entropy" if self.n_val else "none (no val rows): last epoch",
                "n_train": self.n_train, "n_val": self.n_val}


def fit_paper_linear(train_x: ArrayLike, train_y: ArrayLike, val_x: ArrayLike | None = None,
                     val_y: ArrayLike | None = None, seed: int = 0, epochs: int = PAPER_EPOCHS,
                     patience: int = PAPER_PATIENCE) -> PaperLinearProbe:
    """Train one linear layer with Adam (lr 1e-4), batch 64 and cross-entropy on ``train``, early-stopped on ``val``."""
    import torch

    tx, ty = np.asarray(train_x, dtype=np.float32), np.asarray(train_y)
    classes = np.unique(ty)
    if len(classes) < 2 or len(tx) != len(ty) or epochs < 1 or patience < 1:
        raise ValueError("the paper linear classifier needs one label per row, at least two training classes, "
                         "epochs >= 1 and patience >= 1")
    has_val = val_x is not None and val_y is not None and len(np.asarray(val_y)) > 0
    vx = torch.as_tensor(np.asarray(val_x, dtype=np.float32)) if has_val else None
    vy_raw = np.asarray(val_y) if has_val else np.zeros(0, np.int64)
    known = np.isin(vy_raw, classes)  # a val class never seen in training cannot be scored by the loss
    vy = torch.as_tensor(np.searchsorted(classes, vy_raw[known]), dtype=torch.long)
    x, y = torch.as_tensor(tx), torch.as_tensor(np.searchsorted(classes, ty), dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(tx.shape[1], len(classes))
        order = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(layer.parameters(), lr=PAPER_LR)
        loss_fn = torch.nn.CrossEntropyLoss()
        best_state, best_loss, best_epoch, val_losses, run = None, float("inf"), 0, [], 0
        for epoch in range(1, epochs + 1):
            run = epoch
            for batch in torch.randperm(len(x), generator=order).split(PAPER_BATCH):
                optimizer.zero_grad()
                loss_fn(layer(x[batch]), y[batch]).backward()
                optimizer.step()
            if vx is None or not known.any():
                best_epoch = epoch
                continue
            with torch.no_grad():
                loss = float(loss_fn(layer(vx[torch.as_tensor(known)]), vy))
            val_losses.append(loss)
            if loss < best_loss:
                best_loss, best_epoch = loss, epoch
                best_state = {k: v.clone() for k, v in layer.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
        if best_state is not None:
            layer.load_state_dict(best_state)
    return PaperLinearProbe(layer, classes, seed, epochs, run, best_epoch, patience, val_losses,
                            len(ty), int(known.sum()))


Probe = LinearProbe | PaperLinearProbe


def fit_probe(probe: str, train_x: ArrayLike, train_y: ArrayLike, val_x: ArrayLike, val_y: ArrayLike,
              seed: int = 0, c_grid: Sequence[float] = C_GRID, epochs: int = PAPER_EPOCHS,
              patience: int = PAPER_PATIENCE) -> Probe:
    """The selected probe: ``logistic`` (:func:`fit_linear_probe`; no seed) or ``paper-linear``."""
    if check_probe(probe) == "logistic":
        return fit_linear_probe(train_x, train_y, val_x, val_y, c_grid)
    return fit_paper_linear(train_x, train_y, val_x, val_y, seed, epochs, patience)


def probe_record(fitted: Probe) -> dict[str, object]:
    """The record of a fitted probe; it always names the probe (``probe``)."""
    return logistic_record(fitted) if isinstance(fitted, LinearProbe) else fitted.record


# --- Both probes on every split of one mpp --------------------------------------------------------
#
# kNN and linear probe at one mpp over several seeded slide splits, with mean ± std.

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


# --- Why a split cannot be probed -----------------------------------------------------------------
#
# kNN and the linear probe need val and test tiles, two training classes and k reference tiles on every
# split; a record leaves out, with the reason, an mpp whose tiles miss one of them.

def split_problem(labels: np.ndarray, split: Split, k: int = KNN_K) -> str:
    """Why kNN or the linear probe cannot run on one split of one mpp's rows; empty when they can."""
    if not len(split.test) or not len(split.val):
        return f"{len(split.val)} val and {len(split.test)} test tiles"
    if len(np.unique(labels[split.train])) < 2:
        return "fewer than two classes among the training tiles"
    if len(split.train) + len(split.val) < k:
        return f"{len(split.train) + len(split.val)} train + val tiles, fewer than kNN's k = {k}"
    return ""


def rows_problem(labels: np.ndarray, slides: np.ndarray, splits: Sequence[SlideSplit]) -> str:
    """The first split on which these rows cannot be probed, as a reason; empty when every split works."""
    for split in splits:
        problem = split_problem(labels, split.rows(slides))
        if problem:
            return f"split seed {split.seed}: {problem}"
    return ""


# --- The probes record ----------------------------------------------------------------------------
#
# kNN and linear probes per mpp of one embeddings file (``protocol: cms``: ``magflow.evaluate.cms``).

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
    """The ``probes`` record: kNN and linear-probe scores per mpp (``protocol: cms``: :func:`cms_probes`)."""
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
