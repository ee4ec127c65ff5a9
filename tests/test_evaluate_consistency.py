"""Cross-magnification consistency: parent lookup, a brute-force pair loop, noisy copies versus shuffles."""

import math

import numpy as np
import pytest

from magflow.evaluate import COARSE_MPP, FINE_MPP, hierarchy_consistency, parent_rows
from magflow.preprocess.hierarchy import children, parent


def test_parent_rows_by_hand_and_against_the_hierarchy_arithmetic():
    parents = np.array([[0, 0], [1, 0], [0, 1]])  # (col, row)
    kids = np.array([[5, 2], [3, 3], [4, 4], [2, 7], [40, 40]])
    np.testing.assert_array_equal(parent_rows(parents, kids, 4), [1, 0, -1, 2, -1])
    all_kids = np.vstack([children(int(i), int(j), 4) for i, j in parents])
    expected = [[tuple(p) for p in parents].index(parent(int(i), int(j), 4)[:2]) for i, j in all_kids]
    np.testing.assert_array_equal(parent_rows(parents, all_kids, 4), expected)
    assert COARSE_MPP / FINE_MPP == 4


def brute_force(parents, kids, owner, labels):
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    sets = {"pos": [], "same": [], "diff": []}
    for i, p in enumerate(parents):
        for j, c in enumerate(kids):
            if owner[j] < 0:
                continue
            key = "pos" if owner[j] == i else "same" if labels[owner[j]] == labels[i] else "diff"
            sets[key].append(cos(p, c))
    return {k: float(np.mean(v)) for k, v in sets.items()}, {k: len(v) for k, v in sets.items()}


def noisy_family(n_parents=60, per_parent=16, n_classes=3, noise=0.5, seed=0):
    """Parents = class centre + own deviation; children = parent + noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_parents) % n_classes
    centres = rng.normal(size=(n_classes, 16)) * 1.5
    parents = centres[labels] + rng.normal(size=(n_parents, 16))
    owner = np.repeat(np.arange(n_parents), per_parent)
    kids = parents[owner] + noise * rng.normal(size=(len(owner), 16))
    return parents, kids, owner, labels


def test_equals_a_brute_force_loop_over_pairs():
    rng = np.random.default_rng(1)
    parents, labels = rng.normal(size=(9, 5)), np.array([0, 0, 1, 1, 1, 2, 2, 0, 1])
    owner = rng.integers(-1, 9, 40)  # some children have no parent
    kids = rng.normal(size=(40, 5))
    result = hierarchy_consistency(parents, kids, owner, labels)
    means, counts = brute_force(parents, kids, owner, labels)
    assert result.s_pos == pytest.approx(means["pos"], rel=1e-12)
    assert result.s_neg_same == pytest.approx(means["same"], rel=1e-12)
    assert result.s_neg_diff == pytest.approx(means["diff"], rel=1e-12)
    assert result.delta_hier == pytest.approx(means["pos"] - means["same"], rel=1e-12)
    assert result.delta_sem == pytest.approx(means["same"] - means["diff"], rel=1e-12)
    assert (result.n_pos, result.n_neg_same, result.n_neg_diff) == (counts["pos"], counts["same"], counts["diff"])


def test_noisy_copies_know_their_parent_and_shuffles_do_not():
    parents, kids, owner, labels = noisy_family()
    copies = hierarchy_consistency(parents, kids, owner, labels)
    assert copies.delta_hier > 0.3 and copies.delta_sem > 0.3

    shuffled = hierarchy_consistency(parents, kids[np.random.default_rng(2).permutation(len(kids))], owner, labels)
    assert abs(shuffled.delta_hier) < 0.02
    assert abs(shuffled.delta_sem) < 0.05  # class-level sums over three classes vary more

    # shuffled within each class: the parent link is gone, the class is kept
    rng = np.random.default_rng(3)
    within = np.arange(len(kids))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels[owner] == c)
        within[rows] = rng.permutation(rows)
    kept_class = hierarchy_consistency(parents, kids[within], owner, labels)
    assert abs(kept_class.delta_hier) < 0.02 and kept_class.delta_sem > 0.3


def test_a_single_class_has_no_different_label_pairs():
    parents, kids, owner, _ = noisy_family(n_parents=4, per_parent=2)
    result = hierarchy_consistency(parents, kids, owner, np.zeros(4, int))
    assert result.n_neg_diff == 0 and math.isnan(result.s_neg_diff) and math.isnan(result.delta_sem)
