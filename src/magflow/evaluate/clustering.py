"""K-Means with k = the number of classes: adjusted mutual information and the Davies-Bouldin index.

Features are L2-normalised first (the cosine geometry of the kNN metric), then clustered with
scikit-learn ``KMeans(n_clusters=n_classes, n_init=10, random_state=0)`` (k-means++, Lloyd).

- AMI: ``adjusted_mutual_info_score(labels, clusters)`` (arithmetic normalisation); 0 for chance, 1
  for clusters equal to the classes up to renaming.
- Davies-Bouldin: of the K-Means partition, on the same normalised features (lower is better).
  The index of the ground-truth classes on those features is reported beside it, as a reference
  for how separable the classes themselves are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, davies_bouldin_score

from magflow.evaluate.vectors import l2_normalize

KMEANS_SEED = 0
KMEANS_N_INIT = 10


@dataclass(frozen=True)
class ClusteringScores:
    ami: float
    davies_bouldin: float          # of the K-Means clusters
    davies_bouldin_classes: float  # of the ground-truth classes
    n_clusters: int
    seed: int
    n_init: int


def kmeans_scores(embeddings: ArrayLike, labels: ArrayLike, seed: int = KMEANS_SEED,
                  n_init: int = KMEANS_N_INIT) -> ClusteringScores:
    """Cluster into as many groups as there are classes, then score against the labels."""
    x, y = l2_normalize(embeddings), np.asarray(labels)
    k = len(np.unique(y))
    if k < 2 or len(x) != len(y) or len(x) <= k:
        raise ValueError("K-Means scores need one label per row, at least two classes and more rows than classes")
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    return ClusteringScores(
        ami=float(adjusted_mutual_info_score(y, clusters)),
        davies_bouldin=float(davies_bouldin_score(x, clusters)),
        davies_bouldin_classes=float(davies_bouldin_score(x, y)),
        n_clusters=k, seed=seed, n_init=n_init,
    )
