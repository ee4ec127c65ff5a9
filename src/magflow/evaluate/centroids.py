"""The centroid cosine-similarity matrix across mpps (continuous magnification, App. D).

Each mpp's centroid is the mean of its L2-normalised embeddings (every tile weighs the same,
whatever its norm); entry [a, b] is the cosine similarity of the centroids of mpps a and b.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.evaluate.vectors import l2_normalize


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
