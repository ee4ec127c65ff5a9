"""RankMe: the effective rank of an embedding matrix, by two definitions (both named in every record).

``paper`` (Garrido et al. 2023; continuous magnification App. B):

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

``covariance`` (the continuous-magnification authors' released code, ``RankMeMetric``):

RankMe(Z) = exp(−Σ_k p_k log p_k),  p_k = λ̃_k / Σ_j λ̃_j,  λ̃_k = max(λ_k, 1e-12),

with λ the K eigenvalues of the covariance matrix of the *centred* columns (N − 1 in the
denominator, as ``torch.cov``). The clamp comes first, then p is normalised to sum 1, so N − 1
against N changes p only through the clamp. Here in float64 (the released code runs in the
embeddings' float32). Centring removes the mean embedding: N equal rows score about 1 by ``paper``
but K by ``covariance`` (every eigenvalue is then at the clamp, so p is uniform).

The ``rankme`` record (:func:`rankme_profile`) scores every mpp of an embeddings file on the rows of
:func:`magflow.evaluate.data.profile_rows`, at most ``RANKME_MAX_N`` of them, an equal number per mpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import xlogy

from magflow.evaluate.data import EvalData, mpp_key, profile_rows
from magflow.evaluate.record import MetricResult

if TYPE_CHECKING:  # settings imports this module's definitions
    from magflow.evaluate.settings import EvalContext

RANKME_EPS = 1e-7        # Garrido et al.'s ε, added to every p_k
RANKME_MAX_N = 25_600    # rows per mpp, as in Garrido et al.
RANKME_SEED = 0          # which rows are kept when N is capped
COVARIANCE_CLAMP = 1e-12  # the released code's floor on every covariance eigenvalue
COVARIANCE_DDOF = 1       # torch.cov's default correction (N − 1)
PAPER = "paper"
COVARIANCE = "covariance"
RANKME_DEFINITIONS = (PAPER, COVARIANCE)


@dataclass(frozen=True)
class RankMe:
    """One RankMe score and what it was computed from."""

    score: float
    n: int                      # rows used
    dim: int                    # columns K
    eps: float                  # paper: ε added to every p_k; covariance: the eigenvalue clamp
    precision: str = "float64"  # dtype of the SVD or eigendecomposition
    definition: str = PAPER


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


def _matrix(embeddings: ArrayLike) -> np.ndarray:
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2 or 0 in z.shape:
        raise ValueError(f"embeddings must be a non-empty N×K matrix, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("embeddings contain NaN or infinite values")
    return z


def rankme(embeddings: ArrayLike, eps: float = RANKME_EPS) -> RankMe:
    """RankMe of an N×K embedding matrix (``paper``): float64 singular values of the uncentred matrix."""
    z = _matrix(embeddings)
    singular_values = np.linalg.svd(z, compute_uv=False)
    return RankMe(rankme_of_singular_values(singular_values, eps), z.shape[0], z.shape[1], eps)


def rankme_covariance(embeddings: ArrayLike, clamp: float = COVARIANCE_CLAMP) -> RankMe:
    """RankMe of an N×K matrix (``covariance``): entropy of its clamped, sum-1 covariance eigenvalues."""
    z = _matrix(embeddings)
    if z.shape[0] <= COVARIANCE_DDOF:
        raise ValueError(f"the covariance RankMe needs at least {COVARIANCE_DDOF + 1} rows, got {z.shape[0]}")
    centred = z - z.mean(axis=0)
    covariance = centred.T @ centred / (z.shape[0] - COVARIANCE_DDOF)
    eigenvalues = np.maximum(np.linalg.eigvalsh(covariance), clamp)
    p = eigenvalues / eigenvalues.sum()
    score = float(np.exp(-np.sum(p * np.log(p))))
    return RankMe(score, z.shape[0], z.shape[1], clamp, definition=COVARIANCE)


def rankme_by_definition(embeddings: ArrayLike, definition: str = PAPER) -> RankMe:
    """RankMe of an N×K matrix by ``definition`` (``paper`` or ``covariance``), each with its own constant."""
    if definition == PAPER:
        return rankme(embeddings)
    if definition == COVARIANCE:
        return rankme_covariance(embeddings)
    raise ValueError(f"unknown RankMe definition '{definition}'; known: {', '.join(RANKME_DEFINITIONS)}")


def definition_constants(definition: str) -> dict[str, object]:
    """What a record states about how its RankMe scores were computed."""
    if definition == PAPER:
        return {"definition": PAPER, "eps": RANKME_EPS, "svd": "float64, uncentred"}
    if definition == COVARIANCE:
        return {"definition": COVARIANCE, "clamp": COVARIANCE_CLAMP, "ddof": COVARIANCE_DDOF,
                "eigendecomposition": "float64 eigvalsh of the centred covariance; eigenvalues clamped, "
                                      "then normalised to sum 1"}
    raise ValueError(f"unknown RankMe definition '{definition}'; known: {', '.join(RANKME_DEFINITIONS)}")


def shared_rows(n: int, max_n: int = RANKME_MAX_N, seed: int = RANKME_SEED) -> NDArray[np.int64]:
    """Sorted rows to keep out of n: all of them when n ≤ max_n, else a seeded sample of max_n."""
    if n <= max_n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False)).astype(np.int64)


def rankme_by_mpp(embeddings: Mapping[float, ArrayLike], tile_ids: Mapping[float, ArrayLike] | None = None,
                  max_n: int = RANKME_MAX_N, seed: int = RANKME_SEED,
                  eps: float = RANKME_EPS, definition: str = PAPER) -> dict[float, RankMe]:
    """RankMe (by ``definition``) at every mpp on the same tiles, at most ``max_n`` of them.

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
    if definition == PAPER:
        return {m: rankme(matrices[m][rows], eps) for m in mpps}
    return {m: rankme_by_definition(matrices[m][rows], definition) for m in mpps}


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted id in ``ids`` (all present)."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids, wanted, sorter=order)]


def rankme_profile(data: EvalData, context: EvalContext) -> MetricResult:
    """The ``rankme`` record: RankMe (``evaluate.rankme.definition``) at every mpp of ``data``."""
    rows, rule, left_out = profile_rows(data)
    n = min(len(r) for r in rows.values())
    cap = min(n, RANKME_MAX_N)
    definition = context.settings.rankme_definition
    scores = {}
    for m, r in rows.items():
        keep = r[shared_rows(len(r), cap, RANKME_SEED)]
        scores[mpp_key(m)] = rankme_by_definition(data.features(m, keep), definition)
    result = {"definition": definition, "mpps": [float(m) for m in rows], "rows": rule, "left_out": left_out,
              "n_available": {mpp_key(m): len(r) for m, r in rows.items()},
              "rankme": {k: s.score for k, s in scores.items()}, "n": {k: s.n for k, s in scores.items()},
              "dim": next(iter(scores.values())).dim}
    return MetricResult(result, [RANKME_SEED], {**definition_constants(definition), "max_n": RANKME_MAX_N,
                                                "row_seed": RANKME_SEED, "equal_n": cap})
