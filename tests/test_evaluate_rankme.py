"""RankMe: known answers for equal singular values, row-order invariance, an independent float64 computation."""

import math

import numpy as np
import pytest

from magflow.evaluate import RANKME_EPS, rankme, rankme_by_mpp, rankme_of_singular_values, shared_rows
from magflow.evaluate.rankme import rankme_by_definition, rankme_covariance


def with_singular_values(sigma, n_rows, seed=0):
    """An n_rows × len(sigma) matrix U diag(sigma) Vᵀ with random orthonormal U and V."""
    rng = np.random.default_rng(seed)
    k = len(sigma)
    u, _ = np.linalg.qr(rng.normal(size=(n_rows, k)))
    v, _ = np.linalg.qr(rng.normal(size=(k, k)))
    return u @ np.diag(sigma) @ v.T


def independent_rankme(z, eps):
    """exp(−Σ p log p) from the eigenvalues of the Gram matrix, with a plain Python sum."""
    gram = z.astype(np.float64).T @ z.astype(np.float64)
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    total = sum(sigma)
    entropy = 0.0
    for s in sigma:
        p = s / total + eps
        entropy -= p * math.log(p)
    return math.exp(entropy)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_k_equal_singular_values_give_k_full_rank(k):
    z = with_singular_values([3.7] * k, n_rows=50, seed=k)
    result = rankme(z)
    assert abs(result.score - k) < 1e-6
    assert (result.n, result.dim, result.eps, result.precision) == (50, k, RANKME_EPS, "float64")


@pytest.mark.parametrize(("k", "width"), [(1, 2), (2, 5), (3, 8), (5, 12)])
def test_rank_deficient_matrix_matches_the_closed_form_with_eps(k, width):
    z = with_singular_values([2.0] * k + [0.0] * (width - k), n_rows=40, seed=width)
    eps = RANKME_EPS
    closed = math.exp(-k * (1 / k + eps) * math.log(1 / k + eps) - (width - k) * eps * math.log(eps))
    assert rankme(z).score == pytest.approx(closed, rel=1e-12)
    # ε is added to the zero singular values too (the reference convention), so the score is above k by more than 1e-6
    assert rankme(z).score - k > 1e-6
    assert rankme(z, eps=0.0).score == pytest.approx(k, abs=1e-9)


def test_singular_value_formula_by_hand():
    # σ = (3, 1): p = (0.75, 0.25) + ε
    p = np.array([0.75, 0.25]) + 1e-7
    assert rankme_of_singular_values([3.0, 1.0]) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-15)
    assert rankme_of_singular_values([5.0, 0.0, 0.0], eps=0.0) == 1.0


def test_invariant_to_row_order_and_matches_an_independent_float64_computation():
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(300, 24)) * np.geomspace(3.0, 0.01, 24) + 0.5).astype(np.float32)  # uncentred
    score = rankme(z).score
    assert rankme(z[rng.permutation(len(z))]).score == pytest.approx(score, rel=1e-12)
    assert score == pytest.approx(independent_rankme(z, 1e-7), rel=1e-10)
    centred = independent_rankme(z - z.mean(axis=0), 1e-7)
    assert abs(score - centred) > 0.1  # the matrix is not centred


def test_profile_uses_the_same_capped_rows_at_every_mpp():
    rng = np.random.default_rng(2)
    per_mpp = {m: rng.normal(size=(50, 6)) * np.arange(1, 7) * m for m in (0.5, 1.0, 2.0)}
    profile = rankme_by_mpp(per_mpp, max_n=20, seed=3)
    rows = shared_rows(50, 20, 3)
    assert len(rows) == len(np.unique(rows)) == 20
    for m, z in per_mpp.items():
        assert profile[m].n == 20 and profile[m].eps == RANKME_EPS
        assert profile[m].score == pytest.approx(rankme(z[rows]).score, rel=1e-12)
    assert list(shared_rows(5, 20)) == [0, 1, 2, 3, 4]


def test_profile_aligns_tiles_by_id():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(30, 5)) + 1.0
    ids = np.arange(100, 130)
    order = rng.permutation(30)
    extra = np.vstack([z[order], rng.normal(size=(3, 5))])  # same tiles shuffled, plus three only here
    profile = rankme_by_mpp({0.5: z, 1.0: extra}, tile_ids={0.5: ids, 1.0: np.r_[ids[order], 7, 8, 9]})
    assert profile[0.5].n == profile[1.0].n == 30
    assert profile[1.0].score == pytest.approx(profile[0.5].score, rel=1e-12)
    with pytest.raises(ValueError, match="same tiles"):
        rankme_by_mpp({0.5: z, 1.0: extra})


def independent_covariance_rankme(z):
    """The released code's definition, step by step in float64: centre, covariance with N − 1, eigh, clamp, sum 1."""
    z = np.asarray(z, dtype=np.float64)
    centred = z - z.mean(axis=0, keepdims=True)
    covariance = np.einsum("ni,nj->ij", centred, centred) / (len(z) - 1)
    eigenvalues, _ = np.linalg.eigh(covariance)
    eigenvalues = np.where(eigenvalues < 1e-12, 1e-12, eigenvalues)
    p = eigenvalues / eigenvalues.sum()
    return math.exp(-sum(float(q) * math.log(float(q)) for q in p))


def test_covariance_rankme_matches_an_independent_float64_eigendecomposition():
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(400, 32)) * np.geomspace(2.0, 0.001, 32) + 3.0).astype(np.float32)
    result = rankme_covariance(z)
    assert result.score == pytest.approx(independent_covariance_rankme(z), rel=1e-10)
    assert (result.n, result.dim, result.eps, result.definition) == (400, 32, 1e-12, "covariance")
    assert rankme_by_definition(z, "covariance") == result
    assert rankme_by_definition(z, "paper") == rankme(z)
    # the two definitions differ on an uncentred matrix: the mean embedding is one strong direction for the paper's
    assert abs(result.score - rankme(z).score) > 1.0


def test_covariance_rankme_known_answers():
    # the 8 corners of a ±1 cube along 3 orthonormal directions of a 10-wide space, shifted off the origin:
    # 3 equal covariance eigenvalues and 7 at the clamp, so the score is 3 to within ~1e-9
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    corners = np.array([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)])
    z = corners @ q[:3] + 5.0
    assert rankme_covariance(z).score == pytest.approx(3.0, abs=1e-8)
    assert rankme_covariance(z).score == pytest.approx(independent_covariance_rankme(z), rel=1e-10)
    assert rankme_covariance(np.ones((7, 5))).score == pytest.approx(5.0, rel=1e-12)  # all eigenvalues at the clamp
    with pytest.raises(ValueError, match="at least 2 rows"):
        rankme_covariance(np.ones((1, 4)))
    with pytest.raises(ValueError, match="unknown RankMe definition"):
        rankme_by_definition(np.ones((3, 2)), "svd")


def test_profile_by_either_definition_on_the_same_rows():
    rng = np.random.default_rng(5)
    z = {0.5: rng.normal(size=(60, 8)), 1.0: rng.normal(size=(60, 8)) + 1.0}
    paper = rankme_by_mpp(z, max_n=40)
    covariance = rankme_by_mpp(z, max_n=40, definition="covariance")
    rows = shared_rows(60, 40)
    for m in z:
        assert paper[m] == rankme(z[m][rows])
        assert covariance[m].score == pytest.approx(independent_covariance_rankme(z[m][rows]), rel=1e-10)
        assert covariance[m].n == 40


def test_figure_label_reads_the_definition_from_the_record():
    from magflow.report.figures import rankme_label

    assert rankme_label({"result": {"definition": "covariance"}}) == "RankMe (covariance eigenvalues)"
    assert rankme_label({"result": {"definition": "paper"}}) == rankme_label({"result": {}})
