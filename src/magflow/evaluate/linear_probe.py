"""Linear probes: ``logistic`` (the default, below) or ``paper-linear`` (the MAD paper's, end of module).

``logistic``: L2-regularised multinomial logistic regression on standardised features.

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

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from magflow.errors import ConfigError
from magflow.evaluate.classification import ClassificationScores, classification_scores
from magflow.evaluate.probe_names import PROBES, check_probe
from magflow.evaluate.splits import Split

if TYPE_CHECKING:  # torch is imported when a paper-linear probe is fitted, not with this module
    import torch

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
PAPER_EPOCHS = 100
PAPER_PATIENCE = 10


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
