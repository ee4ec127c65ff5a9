"""K-Means AMI / Davies-Bouldin and the centroid cosine-similarity matrix, against hand computations."""

import math

import numpy as np
import pytest

from magflow.evaluate import KMEANS_N_INIT, KMEANS_SEED, centroid_similarity, kmeans_scores


def davies_bouldin_by_hand(x, labels):
    classes = sorted(set(labels.tolist()))
    centres = {c: x[labels == c].mean(axis=0) for c in classes}
    spread = {c: np.mean([np.linalg.norm(v - centres[c]) for v in x[labels == c]]) for c in classes}
    worst = [max((spread[a] + spread[b]) / np.linalg.norm(centres[a] - centres[b]) for b in classes if b != a)
             for a in classes]
    return sum(worst) / len(classes)


def blobs(seed=0, per_class=40, noise=0.05):
    rng = np.random.default_rng(seed)
    labels = np.repeat([3, 7, 9], per_class)
    directions = {3: [1, 0, 0, 0], 7: [0, 1, 0, 0], 9: [0, 0, 1, 1]}
    x = np.array([directions[c] for c in labels], float) + rng.normal(scale=noise, size=(len(labels), 4))
    return x * rng.uniform(0.5, 5.0, (len(labels), 1)), labels  # norms vary: the metric must not care


def test_separated_classes_give_ami_one_and_the_hand_davies_bouldin():
    x, labels = blobs()
    scores = kmeans_scores(x, labels)
    assert scores.ami == pytest.approx(1.0, abs=1e-12)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert scores.davies_bouldin == pytest.approx(davies_bouldin_by_hand(unit, labels), rel=1e-9)
    assert scores.davies_bouldin_classes == pytest.approx(scores.davies_bouldin, rel=1e-12)
    assert (scores.n_clusters, scores.seed, scores.n_init) == (3, KMEANS_SEED, KMEANS_N_INIT) == (3, 0, 10)


def test_random_labels_give_ami_near_zero_and_results_are_seeded():
    x, labels = blobs(seed=1)
    shuffled = np.random.default_rng(2).permutation(labels)
    scores = kmeans_scores(x, shuffled)
    assert abs(scores.ami) < 0.05
    assert kmeans_scores(x, shuffled) == scores


def test_centroid_cosine_matrix_by_hand():
    result = centroid_similarity({
        1.0: [[2.0, 0.0]],
        0.5: [[1.0, 0.0], [0.0, 5.0]],   # unit rows average to (½, ½)
        2.0: [[0.0, 3.0], [0.0, 0.1]],
    })
    assert result.mpps == (0.5, 1.0, 2.0) and result.n == (2, 1, 2)
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(result.matrix, [[1, r, r], [r, 1, 0], [r, 0, 1]], atol=1e-15)


def test_centroids_ignore_row_norms_and_order():
    rng = np.random.default_rng(3)
    per_mpp = {m: rng.normal(size=(20, 5)) + m for m in (0.25, 1.0)}
    scaled = {m: z[::-1] * rng.uniform(0.1, 10, (20, 1)) for m, z in per_mpp.items()}
    np.testing.assert_allclose(centroid_similarity(scaled).matrix, centroid_similarity(per_mpp).matrix, rtol=1e-12)
    unit = {m: z / np.linalg.norm(z, axis=1, keepdims=True) for m, z in per_mpp.items()}
    a, b = unit[0.25].mean(0), unit[1.0].mean(0)
    assert centroid_similarity(per_mpp).matrix[0, 1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
