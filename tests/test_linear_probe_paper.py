"""The MAD paper's linear classifier (``paper-linear``): one nn.Linear, Adam lr 1e-4, batch 64, cross-entropy."""

import math

import numpy as np
import pytest
import torch

from magflow.errors import ConfigError
from magflow.evaluate.probes import (PAPER_BATCH, PAPER_LR, LinearProbe, PaperLinearProbe, fit_paper_linear,
                                     fit_probe, probe_record)


def blobs(n_per_class: int, seed: int, classes=(1, 4, 7), dim: int = 6, spread: float = 0.5):
    """Well-separated Gaussian blobs: class c has mean 10 · e_(index of c)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, spread, (n_per_class, dim)) + 10 * np.eye(dim)[i] for i in range(len(classes))])
    y = np.repeat(np.asarray(classes), n_per_class)
    return x.astype(np.float32), y


def test_it_is_exactly_one_linear_layer_and_separates_separable_data():
    x, y = blobs(100, 0)
    vx, vy = blobs(30, 1)
    tx, ty = blobs(50, 2)
    probe = fit_paper_linear(x, y, vx, vy, seed=0, epochs=300, patience=300)
    assert type(probe.layer) is torch.nn.Linear and len(list(probe.layer.children())) == 0
    assert (probe.layer.in_features, probe.layer.out_features) == (6, 3)
    assert [p.shape for p in probe.layer.parameters()] == [torch.Size([3, 6]), torch.Size([3])]
    np.testing.assert_array_equal(probe.predict(tx), ty)  # labels are mapped back to 1, 4, 7
    record = probe_record(probe)
    assert record["probe"] == "paper-linear" and record["optimizer"] == "Adam"
    assert record["lr"] == 1e-4 and record["batch_size"] == 64 and record["loss"] == "cross-entropy"
    assert record["n_train"] == 300 and record["n_val"] == 90 and record["seed"] == 0


def test_training_uses_adam_at_lr_1e_4_and_batches_of_64(monkeypatch):
    made, steps, batches = [], [], []
    real_adam, real_loss = torch.optim.Adam, torch.nn.CrossEntropyLoss

    class SpyAdam(real_adam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            made.append(dict(self.defaults))

        def step(self, closure=None):
            steps.append(1)
            return super().step(closure)

    class SpyLoss(real_loss):
        def forward(self, logits, target):
            batches.append(len(target))
            return super().forward(logits, target)

    monkeypatch.setattr(torch.optim, "Adam", SpyAdam)
    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", SpyLoss)
    x, y = blobs(70, 0)  # 210 rows: batches of 64, 64, 64, 18 per epoch
    probe = fit_paper_linear(x, y, seed=3, epochs=5)
    assert len(made) == 1 and made[0]["lr"] == PAPER_LR == 1e-4 and made[0]["weight_decay"] == 0
    assert len(steps) == 5 * math.ceil(210 / PAPER_BATCH)
    assert batches == [64, 64, 64, 18] * 5  # no val rows: no validation loss is computed
    assert probe.epochs_run == 5 and probe.best_epoch == 5 and probe.val_loss == []


def test_seed_fixes_the_run_and_early_stopping_keeps_the_best_val_epoch():
    x, y = blobs(40, 0, spread=2.0)
    vx, vy = blobs(20, 1, spread=2.0)
    a = fit_paper_linear(x, y, vx, vy, seed=5, epochs=30, patience=3)
    b = fit_paper_linear(x, y, vx, vy, seed=5, epochs=30, patience=3)
    c = fit_paper_linear(x, y, vx, vy, seed=6, epochs=30, patience=3)
    torch.testing.assert_close(a.layer.weight, b.layer.weight)
    assert not torch.allclose(a.layer.weight, c.layer.weight)
    assert a.best_epoch == int(np.argmin(a.val_loss)) + 1 and len(a.val_loss) == a.epochs_run
    with torch.no_grad():  # the kept weights are those of the best epoch: their val loss is the minimum
        logits = a.layer(torch.as_tensor(vx))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(np.searchsorted(a.classes, vy)))
    assert float(loss) == pytest.approx(min(a.val_loss), rel=1e-5)


def test_probe_selection_and_records_name_the_probe():
    x, y = blobs(30, 0)
    vx, vy = blobs(10, 1)
    assert isinstance(fit_probe("logistic", x, y, vx, vy), LinearProbe)
    assert probe_record(fit_probe("logistic", x, y, vx, vy))["probe"] == "logistic"
    assert isinstance(fit_probe("paper-linear", x, y, vx, vy, epochs=2), PaperLinearProbe)
    with pytest.raises(ConfigError, match="evaluate.mad.probe"):
        from magflow.evaluate.probe_names import check_probe
        check_probe("svm", "evaluate.mad.probe")
