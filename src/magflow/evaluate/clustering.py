"""K-Means with k = the number of classes: adjusted mutual information and the Davies-Bouldin index.

Features are L2-normalised first (the cosine geometry of the kNN metric), then clustered with
scikit-learn ``KMeans(n_clusters=n_classes, n_init=10, random_state=0)`` (k-means++, Lloyd).

- AMI: ``adjusted_mutual_info_score(labels, clusters)`` (arithmetic normalisation); 0 for chance, 1
  for clusters equal to the classes up to renaming.
- Davies-Bouldin: of the K-Means partition, on the same normalised features (lower is better).
  The index of the ground-truth classes on those features is reported beside it, as a reference
  for how separable the classes themselves are.

The ``clustering`` record (:func:`clustering`) scores each mpp's labelled tiles with a view there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, davies_bouldin_score

from magflow.evaluate.data import EvalData, l2_normalize, mpp_key
from magflow.evaluate.record import MetricResult, MetricSkipped
from magflow.evaluate.split_plan import require_labels

if TYPE_CHECKING:
    from magflow.evaluate.settings import EvalContext

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


def clustering(data: EvalData, context: EvalContext) -> MetricResult:
    """The ``clustering`` record: K-Means AMI and Davies-Bouldin at every mpp with two classes or more."""
    require_labels(data)
    per_mpp, left_out = {}, {}
    for m in data.mpps:
        rows = data.labelled(m)
        k = len(np.unique(data.labels[rows]))
        if k < 2 or len(rows) <= k:
            left_out[mpp_key(m)] = f"{len(rows)} labelled tiles in {k} classes (need two classes, more tiles than classes)"
            continue
        scores = kmeans_scores(data.features(m, rows), data.labels[rows])
        per_mpp[mpp_key(m)] = {"n": len(rows), "ami": scores.ami, "davies_bouldin": scores.davies_bouldin,
                               "davies_bouldin_classes": scores.davies_bouldin_classes, "k": scores.n_clusters}
    if not per_mpp:
        raise MetricSkipped("no mpp has enough labelled tiles: " + "; ".join(f"{k} mpp: {v}" for k, v in left_out.items()))
    result = {"mpps": [float(k) for k in per_mpp], "left_out": left_out, "scores": per_mpp}
    return MetricResult(result, [KMEANS_SEED], {"kmeans_seed": KMEANS_SEED, "n_init": KMEANS_N_INIT,
                                                "k": "number of classes among the mpp's labelled tiles",
                                                "features": "L2-normalised"})
