"""Block masking: coverage statistics over seeded draws, rectangles, and the half-of-the-batch collate."""

import numpy as np
import pytest

from magflow.pretrain import block_mask, mask_global_crops, sample_blocks

GRID = (14, 14)  # a 224-pixel global crop with 16-pixel patches
N = GRID[0] * GRID[1]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_block_mask_reaches_its_target_on_average_and_never_exceeds_it(ratio):
    rng = np.random.default_rng(0)
    target = int(N * ratio)
    counts = np.array([block_mask(*GRID, target, rng, max_block=N // 2).sum() for _ in range(200)])
    assert counts.max() <= target
    assert abs(counts.mean() / N - ratio) < 0.02


def test_mask_is_the_union_of_rectangles_inside_the_grid():
    rng = np.random.default_rng(1)
    for _ in range(50):
        blocks = sample_blocks(*GRID, num_masked=60, rng=rng)
        painted = np.zeros(GRID, dtype=bool)
        for top, left, h, w in blocks:
            assert 0 <= top and top + h <= GRID[0] and 0 <= left and left + w <= GRID[1] and h > 0 and w > 0
            assert not painted[top:top + h, left:left + w].all()  # every rectangle adds new patches
            painted[top:top + h, left:left + w] = True
        assert painted.sum() <= 60
    first = block_mask(*GRID, 60, np.random.default_rng(7))
    again = np.zeros(GRID, dtype=bool)
    for top, left, h, w in sample_blocks(*GRID, 60, np.random.default_rng(7)):
        again[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(first, again)


def test_rectangles_respect_the_aspect_range_up_to_rounding():
    rng = np.random.default_rng(2)
    for _ in range(50):
        for _, _, h, w in sample_blocks(*GRID, 90, rng):
            assert 0.3 / 2 <= h / w <= 2 / 0.3


def test_half_of_the_global_crops_are_masked_with_ratios_spread_over_the_range():
    rng = np.random.default_rng(3)
    n_images, n_masked_images = 8, 4
    edges = np.linspace(0.1, 0.5, n_masked_images + 1)
    all_ratios = []
    for _ in range(100):
        batch = mask_global_crops(n_images, GRID, rng)
        counts = batch.masks.sum(dim=1).numpy()
        assert batch.masks.shape == (n_images, N)
        assert (counts > 0).sum() == n_masked_images
        ratios = np.sort(counts[counts > 0] / N)
        # the k-th smallest ratio lies in the k-th slice of [0.1, 0.5], less a small shortfall
        assert np.all(ratios <= edges[1:]) and np.all(ratios >= edges[:-1] - 0.05)
        all_ratios.extend(ratios)
    assert abs(np.mean(all_ratios) - 0.3) < 0.02


def test_indices_and_weights_follow_the_masks():
    batch = mask_global_crops(6, GRID, np.random.default_rng(4))
    flat = batch.masks.flatten().numpy()
    np.testing.assert_array_equal(batch.indices.numpy(), np.flatnonzero(flat))
    image_of_token = batch.indices.numpy() // N
    counts = batch.masks.sum(dim=1).numpy()
    np.testing.assert_allclose(batch.weights.numpy(), 1.0 / counts[image_of_token])
    assert batch.weights.sum().item() == pytest.approx((counts > 0).sum())
    assert batch.n_masked == flat.sum()


def test_masks_are_reproducible_from_the_seed():
    first = mask_global_crops(4, (6, 6), np.random.default_rng(5)).masks
    second = mask_global_crops(4, (6, 6), np.random.default_rng(5)).masks
    assert (first == second).all()
