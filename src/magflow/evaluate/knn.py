"""kNN classification: k = 20 nearest training tiles by cosine similarity, uniform vote.

Features are L2-normalised first (so cosine similarity is the dot product), then scikit-learn's
``KNeighborsClassifier(n_neighbors=20, metric="cosine", weights="uniform", algorithm="brute")``
votes. kNN has no hyperparameter to tune, so its reference set is train + val of a split.

Ties: a tied vote goes to the smallest class label (scikit-learn takes the argmax over its sorted
classes). Tiles at exactly the same distance as the k-th neighbour are broken by the brute-force
partial sort, which is deterministic for a given input but not specified; with real-valued
embeddings such ties do not occur in practice.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.neighbors import KNeighborsClassifier

from magflow.evaluate.classification import ClassificationScores, classification_scores
from magflow.evaluate.splits import Split
from magflow.evaluate.vectors import l2_normalize

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
