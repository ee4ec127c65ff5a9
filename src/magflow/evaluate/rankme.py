"""RankMe: the effective rank of an embedding matrix (Garrido et al. 2023; continuous magnification App. B).

RankMe(Z) = exp(−Σ_{k=1}^{min(N,K)} p_k log p_k),  p_k = σ_k(Z) / ‖σ(Z)‖₁ + ε,

with σ the singular values of the *uncentred* N×K matrix Z, computed in float64. This is the
reference convention: ε is added to every one of the min(N, K) singular values, zero ones included,
and p is not renormalised afterwards.

What ε costs, exactly. For k equal non-zero singular values among m = min(N, K),

    RankMe = exp(−k (1/k + ε) log(1/k + ε) − (m − k) ε log ε),

so every zero singular value adds −ε log ε ≈ 1.6e-6 to the entropy, and the k equal ones add about
kε (log k − 1). With ε = 1e-7 the score is k to within 1e-6 only for a full-rank matrix (m = k) with
k ≤ 4 (k = 4 gives 4 + 6.2e-7, k = 5 gives 5 + 1.5e-6); a rank-1 matrix with two columns already
gives 1 + 1.5e-6, and a full-rank 384-wide isotropic one 384.073. ``eps=0`` gives exactly k (with
0 log 0 = 0). The bias is far below any difference worth reporting, so scores keep the reference ε,
and ε and N are recorded beside each score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import xlogy

RANKME_EPS = 1e-7        # Garrido et al.'s ε, added to every p_k
RANKME_MAX_N = 25_600    # rows per mpp, as in Garrido et al.
RANKME_SEED = 0          # which rows are kept when N is capped


@dataclass(frozen=True)
class RankMe:
    """One RankMe score and what it was computed from."""

    score: float
    n: int                      # rows used
    dim: int                    # columns K
    eps: float
    precision: str = "float64"  # dtype of the SVD


def rankme_of_singular_values(singular_values: ArrayLike, eps: float = RANKME_EPS) -> float:
    """exp(−Σ p log p) with p = σ/‖σ‖₁ + ε over every given singular value (0 log 0 = 0)."""
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError("singular values must be a non-empty 1-d array of finite non-negative numbers")
    total = s.sum()
    if total == 0:
        raise ValueError("RankMe is undefined for an all-zero matrix")
    p = s / total + eps
    return float(np.exp(-np.sum(xlogy(p, p))))


def rankme(embeddings: ArrayLike, eps: float = RANKME_EPS) -> RankMe:
    """RankMe of an N×K embedding matrix: float64 singular values of the uncentred matrix."""
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2 or 0 in z.shape:
        raise ValueError(f"embeddings must be a non-empty N×K matrix, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("embeddings contain NaN or infinite values")
    singular_values = np.linalg.svd(z, compute_uv=False)
    return RankMe(rankme_of_singular_values(singular_values, eps), z.shape[0], z.shape[1], eps)


def shared_rows(n: int, max_n: int = RANKME_MAX_N, seed: int = RANKME_SEED) -> NDArray[np.int64]:
    """Sorted rows to keep out of n: all of them when n ≤ max_n, else a seeded sample of max_n."""
    if n <= max_n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False)).astype(np.int64)


def rankme_by_mpp(embeddings: Mapping[float, ArrayLike], tile_ids: Mapping[float, ArrayLike] | None = None,
                  max_n: int = RANKME_MAX_N, seed: int = RANKME_SEED,
                  eps: float = RANKME_EPS) -> dict[float, RankMe]:
    """RankMe at every mpp on the same tiles, at most ``max_n`` of them.

    Without ``tile_ids``, row i must be the same tile at every mpp (all matrices have one N). With
    ``tile_ids`` (one id array per mpp), the tiles present at every mpp are used, in sorted id order.
    One seeded sample of rows is then taken and used at every mpp.
    """
    mpps = sorted(embeddings)
    if not mpps:
        return {}
    matrices = {m: np.asarray(embeddings[m]) for m in mpps}
    if tile_ids is not None:
        ids = {m: np.asarray(tile_ids[m]) for m in mpps}
        for m in mpps:
            if len(np.unique(ids[m])) != len(ids[m]) or len(ids[m]) != len(matrices[m]):
                raise ValueError(f"tile ids at {m} mpp must be unique, one per embedding row")
        common = ids[mpps[0]]
        for m in mpps[1:]:
            common = np.intersect1d(common, ids[m])
        common = np.sort(common)
        matrices = {m: matrices[m][_positions(ids[m], common)] for m in mpps}
    sizes = {len(a) for a in matrices.values()}
    if len(sizes) != 1:
        raise ValueError(f"the same tiles are needed at every mpp, got row counts "
                         f"{ {m: len(a) for m, a in matrices.items()} }; pass tile_ids to align them")
    rows = shared_rows(sizes.pop(), max_n, seed)
    return {m: rankme(matrices[m][rows], eps) for m in mpps}


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted id in ``ids`` (all present)."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids, wanted, sorter=order)]
