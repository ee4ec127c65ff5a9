"""kNN and linear probe: hand-computed scores, a brute-force kNN, expected accuracies, the cross-mpp matrix."""

import math
from collections import Counter

import numpy as np
import pytest

from magflow.evaluate import (
    C_GRID,
    LabelledTiles,
    classification_scores,
    cross_mpp_matrix,
    fit_linear_probe,
    knn_predict,
    label_metrics,
    linear_probe_scores,
    mean_std,
    retained_percent,
    seeded_splits,
    split_slides,
)

SEEDS3 = (0, 1, 2)


def tiles(n_slides=20, per_slide=24, n_classes=3, dim=6, separation=8.0, flip=0.0, shift=0, seed=0):
    """Every slide holds every class; class c sits at separation·e_{(c + shift) mod n} plus unit noise.

    ``flip`` replaces that fraction of labels by another class at random (the features keep the clean class).
    """
    rng = np.random.default_rng(seed)
    slides = np.repeat([f"s{i:02d}" for i in range(n_slides)], per_slide)
    clean = np.tile(np.arange(per_slide) % n_classes, n_slides)
    x = rng.normal(size=(len(clean), dim))
    x[np.arange(len(clean)), (clean + shift) % n_classes] += separation
    y = clean.copy()
    flipped = rng.random(len(y)) < flip
    y[flipped] = (y[flipped] + rng.integers(1, n_classes, flipped.sum())) % n_classes
    return x, y, slides


def test_scores_by_hand():
    s = classification_scores([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], classes=[0, 1, 2, 3], n_train=9)
    assert s.balanced_accuracy == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    f1 = {0: 2 / (2 + 1 + 1), 1: 4 / (4 + 1 + 0), 2: 2 / (2 + 0 + 1)}  # 2tp / (2tp + fp + fn)
    assert s.macro_f1 == pytest.approx(sum(f1.values()) / 3)
    assert {c: s.per_class_f1[c] for c in f1} == pytest.approx(f1)
    assert math.isnan(s.per_class_f1[3])  # neither present nor predicted
    assert (s.n_train, s.n_test) == (9, 6)
    summary = mean_std([1.0, 2.0, float("nan"), 3.0, 4.0, 5.0])
    assert (summary.mean, summary.std, summary.n) == (3.0, pytest.approx(math.sqrt(2.5)), 5)


def brute_force_knn(train_x, train_y, query_x, k):
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    out = []
    for q in query_x:
        sims = [float(unit(q) @ unit(t)) for t in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = Counter(int(train_y[i]) for i in nearest)
        top = max(votes.values())
        out.append(min(c for c, v in votes.items() if v == top))
    return np.array(out)


@pytest.mark.parametrize("k", [5, 20])
def test_knn_equals_a_brute_force_vote(k):
    rng = np.random.default_rng(k)
    train_x, train_y = rng.normal(size=(80, 5)) * rng.uniform(0.1, 10, (80, 1)), rng.integers(0, 4, 80)
    query = rng.normal(size=(25, 5))
    np.testing.assert_array_equal(knn_predict(train_x, train_y, query, k), brute_force_knn(train_x, train_y, query, k))


def test_knn_tied_vote_goes_to_the_smallest_label():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    assert knn_predict(train, [5, 2, 7], [[1.0, 0.9]], k=2)[0] == 2


def test_separable_embeddings_are_classified_perfectly():
    x, y, slides = tiles()
    result = label_metrics(x, y, slides, seeded_splits(y, slides, seeds=SEEDS3))
    for summary in (result.knn_summary, result.linear_summary):
        assert (summary.balanced_accuracy.mean, summary.balanced_accuracy.std) == (1.0, 0.0)
        assert summary.macro_f1.mean == 1.0
        assert all(v.mean == 1.0 for v in summary.per_class_f1.values())
    assert result.seeds == SEEDS3 and len(result.knn) == 3


def test_label_noise_caps_accuracy_at_the_clean_label_agreement():
    # the features know the clean class and 10% of labels (train and test) are flipped: both classifiers
    # recover the clean class, so each scores exactly what the clean labels score against the noisy ones
    x, y, slides = tiles(n_slides=20, per_slide=40, n_classes=2, flip=0.1, seed=1)
    clean = tiles(n_slides=20, per_slide=40, n_classes=2, seed=1)[1]
    splits = seeded_splits(y, slides, seeds=SEEDS3)
    result = label_metrics(x, y, slides, splits)
    for split, knn, linear in zip(splits, result.knn, result.linear):
        test = split.rows(slides).test
        ceiling = np.mean([np.mean(clean[test][y[test] == c] == c) for c in (0, 1)])  # balanced accuracy by hand
        assert 0.8 < ceiling < 0.98
        assert knn.balanced_accuracy == pytest.approx(ceiling, abs=1e-12)
        assert linear.balanced_accuracy == pytest.approx(ceiling, abs=1e-12)


def test_probe_reaches_the_bayes_accuracy_of_overlapping_gaussians():
    # two classes at ±1 on one axis with unit noise: the best accuracy is Φ(1) = 0.8413
    rng = np.random.default_rng(5)
    n_slides, per_slide = 30, 40
    slides = np.repeat([f"s{i}" for i in range(n_slides)], per_slide)
    y = np.tile(np.arange(per_slide) % 2, n_slides)
    x = rng.normal(size=(len(y), 4))
    x[:, 0] += 2.0 * y - 1.0
    bayes = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    scores = [linear_probe_scores(x, y, split.rows(slides)).balanced_accuracy
              for split in seeded_splits(y, slides, seeds=SEEDS3)]
    assert np.mean(scores) == pytest.approx(bayes, abs=0.035)


def test_regularisation_is_chosen_on_validation_from_the_grid():
    x, y, _ = tiles(n_slides=4, per_slide=30)
    probe = fit_linear_probe(x[:80], y[:80], x[80:], y[80:])
    assert set(probe.val_balanced_accuracy) == set(C_GRID) == {10.0 ** e for e in range(-4, 3)}
    best = max(probe.val_balanced_accuracy.values())
    assert probe.c == min(c for c, v in probe.val_balanced_accuracy.items() if v == best)
    assert probe.converged and probe.n_train == 120


def test_retained_percent_by_hand():
    np.testing.assert_allclose(retained_percent([[0.8, 0.6], [0.5, 1.0]]), [[100, 75], [50, 100]])


def test_cross_mpp_matrix_transfers_where_the_geometry_is_shared():
    # 0.5 and 1.0 mpp share the class geometry; at 2.0 mpp every class looks like the next one
    data = {}
    for mpp, shift, seed in ((0.5, 0, 1), (1.0, 0, 2), (2.0, 1, 3)):
        x, y, slides = tiles(n_slides=15, per_slide=12, shift=shift, seed=seed)
        data[mpp] = LabelledTiles(x, y, slides)
    pooled = np.concatenate([t.labels for t in data.values()])
    splits = seeded_splits(pooled, np.concatenate([t.slides for t in data.values()]), seeds=(0, 1))
    result = cross_mpp_matrix(data, splits)
    assert result.mpps == (0.5, 1.0, 2.0) and result.balanced_accuracy.shape == (2, 3, 3)
    mean, std = result.mean_std(result.balanced_accuracy)
    np.testing.assert_allclose(mean, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(std, 0.0)
    np.testing.assert_allclose(result.retained()[0], [[100, 100, 0], [100, 100, 0], [0, 0, 100]])
    assert set(result.chosen_c.ravel()) <= set(C_GRID)
    # the diagonal is the plain same-mpp probe on the same split
    same = linear_probe_scores(data[1.0].embeddings, data[1.0].labels, splits[0].rows(data[1.0].slides))
    assert result.balanced_accuracy[0, 1, 1] == same.balanced_accuracy


def test_split_is_shared_across_mpps_through_slide_ids():
    x, y, slides = tiles()
    split = split_slides(y, slides, seed=0)
    other = np.roll(slides, 7)  # another mpp's table, rows in another order
    rows = split.rows(other)
    assert set(other[rows.test]) == split.test and set(other[rows.train]) == split.train
