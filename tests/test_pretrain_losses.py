"""DINO, iBOT and KoLeo losses against explicit loops in numpy/math on small hand-made tensors."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from magflow.pretrain import Center, dino_loss, ibot_loss, koleo_loss, sinkhorn_knopp

STUDENT_TEMP = 0.1
TEACHER_TEMP = 0.05


def _log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def _softmax(row: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(row))


def _cross_entropy(target: np.ndarray, student_logits: np.ndarray) -> float:
    log_probs = _log_softmax(student_logits / STUDENT_TEMP)
    return -sum(float(p) * float(lp) for p, lp in zip(target, log_probs))


def _expected_dino(student_views: np.ndarray, teacher_targets: np.ndarray) -> float:
    """Explicit pair list: (g0, t1), (g1, t0), then every local with t0 and t1; mean over pairs and batch."""
    n_views, batch = student_views.shape[:2]
    pairs = [(0, 1), (1, 0)] + [(v, t) for v in range(2, n_views) for t in (0, 1)]
    assert len(pairs) == 2 + 2 * (n_views - 2)
    total = 0.0
    for view, crop in pairs:
        total += sum(_cross_entropy(teacher_targets[crop, b], student_views[view, b]) for b in range(batch)) / batch
    return total / len(pairs)


def _numpy_sinkhorn(logits: np.ndarray, temp: float, n_iterations: int) -> np.ndarray:
    """Alternately give every prototype (column) mass 1/K and every sample (row) mass 1/B; rows then sum to 1."""
    batch, n_prototypes = logits.shape
    q = np.exp(logits / temp)
    q = q / q.sum()
    for _ in range(n_iterations):
        q = q / (q.sum(axis=0, keepdims=True) * n_prototypes)
        q = q / (q.sum(axis=1, keepdims=True) * batch)
    return q * batch


@pytest.fixture
def crops() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    student = rng.normal(size=(5, 3, 6))  # 2 global + 3 local crops, batch 3, 6 prototypes
    teacher = np.tanh(rng.normal(size=(2, 3, 6)))  # cosine-like logits in (-1, 1)
    return student, teacher


def test_dino_loss_with_centering(crops):
    student, teacher = crops
    center = Center(num_prototypes=6)
    previous_batch = np.tanh(np.random.default_rng(1).normal(size=(6, 6)))
    center.update(torch.tensor(previous_batch, dtype=torch.float32))
    expected_center = 0.1 * previous_batch.mean(axis=0)  # EMA from zero with momentum 0.9
    targets = center.targets(torch.tensor(teacher, dtype=torch.float32), TEACHER_TEMP)
    expected_targets = np.array([[_softmax((teacher[c, b] - expected_center) / TEACHER_TEMP) for b in range(3)]
                                 for c in range(2)])
    np.testing.assert_allclose(targets.numpy(), expected_targets, rtol=1e-5, atol=1e-7)
    loss = dino_loss(torch.tensor(student[:2], dtype=torch.float32), targets,
                     torch.tensor(student[2:], dtype=torch.float32), student_temp=STUDENT_TEMP)
    assert loss.item() == pytest.approx(_expected_dino(student, expected_targets), rel=1e-5)


def test_dino_loss_with_sinkhorn_knopp(crops):
    student, teacher = crops
    flat = torch.tensor(teacher.reshape(6, 6), dtype=torch.float32)
    targets = sinkhorn_knopp(flat, TEACHER_TEMP, n_iterations=3)
    expected_targets = _numpy_sinkhorn(teacher.reshape(6, 6), TEACHER_TEMP, 3)
    np.testing.assert_allclose(targets.numpy(), expected_targets, rtol=1e-4, atol=1e-7)
    loss = dino_loss(torch.tensor(student[:2], dtype=torch.float32), targets.reshape(2, 3, 6),
                     torch.tensor(student[2:], dtype=torch.float32), student_temp=STUDENT_TEMP)
    assert loss.item() == pytest.approx(_expected_dino(student, expected_targets.reshape(2, 3, 6)), rel=1e-5)


def test_dino_loss_global_crops_only_uses_the_two_cross_pairs(crops):
    student, teacher = crops
    targets = np.array([[_softmax(teacher[c, b] / TEACHER_TEMP) for b in range(3)] for c in range(2)])
    loss = dino_loss(torch.tensor(student[:2]), torch.tensor(targets), student_temp=STUDENT_TEMP)
    assert loss.item() == pytest.approx(_expected_dino(student[:2], targets), rel=1e-6)


def test_ibot_loss_divides_the_per_image_means_by_all_global_crops():
    """DINOv2's convention: 2 of 4 images masked, so the sum of their two means is divided by 4, not 2."""
    rng = np.random.default_rng(2)
    masks = np.zeros((4, 6), dtype=bool)
    masks[0, [1, 4]] = True           # 2 masked tokens
    masks[2, [0, 2, 3, 5, 1]] = True  # 5 masked tokens; images 1 and 3 have none
    n_masked = int(masks.sum())
    student = rng.normal(size=(n_masked, 7))
    teacher = np.array([_softmax(row / TEACHER_TEMP) for row in np.tanh(rng.normal(size=(n_masked, 7)))])
    ce = [_cross_entropy(teacher[i], student[i]) for i in range(n_masked)]
    expected = ((ce[0] + ce[1]) / 2 + sum(ce[2:7]) / 5) / 4
    loss = ibot_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(masks), student_temp=STUDENT_TEMP)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ibot_loss_rejects_a_token_count_that_does_not_match_the_masks():
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[0, :3] = True
    with pytest.raises(ValueError, match="3 masked tokens"):
        ibot_loss(torch.zeros(2, 5), torch.zeros(2, 5), masks)


def _expected_koleo(x: np.ndarray, eps: float = 1e-8) -> float:
    """DINOv2's KoLeo by brute force: ε is added to each component of the difference and inside the log."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    distances = cdist(unit, unit)
    np.fill_diagonal(distances, np.inf)
    neighbours = distances.argmin(axis=1)
    return -float(np.mean(np.log(np.linalg.norm(unit - unit[neighbours] + eps, axis=1) + eps)))


def test_koleo_matches_brute_force_nearest_neighbours():
    x = np.random.default_rng(3).normal(size=(7, 4))
    assert koleo_loss(torch.tensor(x, dtype=torch.float32)).item() == pytest.approx(_expected_koleo(x), rel=1e-5)


def test_koleo_duplicate_rows_are_eps_apart_as_in_pairwise_distance():
    """‖x − x + ε‖ = ε·√d for a duplicated row, so its term is −log(ε·√d + ε), not −log ε."""
    x = np.array([[1.0, 2.0, 0.5], [1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [0.0, -2.0, 1.0]])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d_2 = min(np.linalg.norm(unit[2] - unit[j]) for j in (0, 1, 3))
    d_3 = min(np.linalg.norm(unit[3] - unit[j]) for j in (0, 1, 2))
    duplicate = 1e-8 * math.sqrt(3) + 1e-8
    expected = -(2 * math.log(duplicate) + math.log(d_2 + 1e-8) + math.log(d_3 + 1e-8)) / 4
    features = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    loss = koleo_loss(features)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(_expected_koleo(x), rel=1e-9)
    loss.backward()
    assert torch.isfinite(features.grad).all()


def test_koleo_sums_over_global_crops():
    x = np.random.default_rng(4).normal(size=(2, 5, 3))
    loss = koleo_loss(torch.tensor(x, dtype=torch.float32))
    assert loss.item() == pytest.approx(_expected_koleo(x[0]) + _expected_koleo(x[1]), rel=1e-5)
