"""The centroid cosine-similarity matrix across mpps (continuous magnification, App. D).

Each mpp's centroid is the mean of its L2-normalised embeddings (every tile weighs the same,
whatever its norm); entry [a, b] is the cosine similarity of the centroids of mpps a and b.

The ``centroids`` record (:func:`centroid_profile`) uses the rows of
:func:`magflow.evaluate.data.profile_rows`, all of them at each mpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.evaluate.data import EvalData, l2_normalize, mpp_key, profile_rows
from magflow.evaluate.record import MetricResult

if TYPE_CHECKING:
    from magflow.evaluate.settings import EvalContext


@dataclass(frozen=True)
class CentroidSimilarity:
    mpps: tuple[float, ...]
    matrix: NDArray[np.float64]  # [a, b], symmetric, 1 on the diagonal
    n: tuple[int, ...]           # tiles averaged per mpp


def centroid_similarity(embeddings: Mapping[float, ArrayLike]) -> CentroidSimilarity:
    """Cosine similarity between the per-mpp centroids of unit-normalised embeddings."""
    mpps = tuple(sorted(embeddings))
    centroids = np.stack([l2_normalize(embeddings[m]).mean(axis=0) for m in mpps])
    norms = np.linalg.norm(centroids, axis=1)
    if np.any(norms == 0):
        raise ValueError("a centroid is zero; its cosine similarity is undefined")
    unit = centroids / norms[:, None]
    matrix = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(matrix, 1.0)
    return CentroidSimilarity(mpps, matrix, tuple(len(np.asarray(embeddings[m])) for m in mpps))


def centroid_profile(data: EvalData, context: EvalContext) -> MetricResult:
    """The ``centroids`` record: the centroid similarity matrix over the mpps of ``data``."""
    rows, rule, left_out = profile_rows(data)
    similarity = centroid_similarity({m: data.features(m, r) for m, r in rows.items()})
    result = {"mpps": list(similarity.mpps), "rows": rule, "left_out": left_out, "matrix": similarity.matrix,
              "n": {mpp_key(m): n for m, n in zip(similarity.mpps, similarity.n)}}
    return MetricResult(result, [], {"normalisation": "L2 per tile, then mean; cosine of the means"})
