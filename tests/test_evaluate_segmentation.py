"""Tile-based segmentation: painting tiles onto the mask grid and scoring hand-made masks."""

import numpy as np
import pytest

from magflow.evaluate import segmentation_scores, tile_label_map

TRUTH = np.array([
    [0, 0, 1, 1],
    [0, 1, 1, 1],
    [2, 2, 2, 0],
    [2, 2, 2, 0],
])
PREDICTED = np.array([
    [1, 1, 1, 1],
    [0, 1, 2, 1],
    [2, 2, 2, 2],
    [1, 2, 0, 0],
])


def test_scores_of_hand_made_masks():
    # 11 labelled pixels, 8 right; class 1: |T|=5 |P|=5 ∩=4; class 2: |T|=6 |P|=5 ∩=4 (glass pixels ignored)
    s = segmentation_scores(TRUTH, PREDICTED)
    assert s.n_pixels == 11
    assert s.pixel_accuracy == pytest.approx(8 / 11)
    assert s.per_class_iou == pytest.approx({1: 4 / 6, 2: 4 / 7})
    assert s.per_class_dice == pytest.approx({1: 8 / 10, 2: 8 / 11})
    assert s.mean_iou == pytest.approx((4 / 6 + 4 / 7) / 2)
    assert s.mean_dice == pytest.approx((8 / 10 + 8 / 11) / 2)


def test_scores_inside_a_region():
    region = np.ones_like(TRUTH, bool)
    region[3] = False
    # 8 labelled pixels, 7 right; class 1: |T|=5 |P|=4 ∩=4; class 2: |T|=3 |P|=4 ∩=3
    s = segmentation_scores(TRUTH, PREDICTED, region=region)
    assert (s.n_pixels, s.pixel_accuracy) == (8, pytest.approx(7 / 8))
    assert s.per_class_iou == pytest.approx({1: 4 / 5, 2: 3 / 4})
    assert s.per_class_dice == pytest.approx({1: 8 / 9, 2: 6 / 7})


def test_a_class_predicted_but_absent_counts_as_zero_and_a_perfect_map_scores_one():
    truth = np.array([[1, 1], [1, 0]])
    s = segmentation_scores(truth, np.array([[1, 3], [1, 3]]))
    assert s.per_class_iou == pytest.approx({1: 2 / 3, 3: 0.0})
    assert s.mean_iou == pytest.approx(1 / 3) and s.pixel_accuracy == pytest.approx(2 / 3)
    perfect = segmentation_scores(TRUTH, TRUTH)
    assert (perfect.mean_iou, perfect.mean_dice, perfect.pixel_accuracy) == (1.0, 1.0, 1.0)


def test_tiles_paint_their_footprint_on_the_mask_grid():
    # 4 µm tiles on a 2 µm mask: each tile covers 2×2 pixels; cells with no tile stay 0
    grid = np.array([[0, 0], [1, 0], [0, 1]])  # (col, row)
    painted = tile_label_map(grid, [1, 2, 3], cell_um=4.0, mask_shape=(4, 5), mask_mpp=2.0)
    np.testing.assert_array_equal(painted, [
        [1, 1, 2, 2, 0],
        [1, 1, 2, 2, 0],
        [3, 3, 0, 0, 0],
        [3, 3, 0, 0, 0],
    ])


def test_pixel_centres_decide_when_tiles_do_not_divide_the_mask():
    # 3 µm tiles, 2 µm pixels: centres at 1, 3, 5, 7 µm fall in tiles 0, 1, 1, 2
    painted = tile_label_map([[0, 0], [1, 0], [2, 0]], [4, 5, 6], cell_um=3.0, mask_shape=(1, 4), mask_mpp=2.0)
    np.testing.assert_array_equal(painted, [[4, 5, 5, 6]])
    # tiles finer than the pixels: the pixel centre (1 µm, 1 µm) lies in tile (col 2, row 2)
    fine = tile_label_map([[c, 2] for c in range(4)], [1, 2, 3, 4], cell_um=0.5, mask_shape=(1, 1), mask_mpp=2.0)
    np.testing.assert_array_equal(fine, [[3]])


def test_painting_the_true_tile_classes_reproduces_the_truth():
    rng = np.random.default_rng(0)
    tile_classes = rng.integers(0, 4, (3, 5))  # rows × cols of tiles, 0 = glass
    truth = np.kron(tile_classes, np.ones((4, 4), int))  # 8 µm tiles on a 2 µm mask
    rows, cols = np.nonzero(tile_classes)
    grid = np.stack([cols, rows], 1)
    painted = tile_label_map(grid, tile_classes[rows, cols], 8.0, truth.shape, 2.0)
    np.testing.assert_array_equal(painted, truth)
    wrong = tile_classes[rows, cols].copy()
    wrong[0] = 1 if wrong[0] != 1 else 2
    s = segmentation_scores(truth, tile_label_map(grid, wrong, 8.0, truth.shape, 2.0))
    assert s.pixel_accuracy == pytest.approx(1 - 16 / np.count_nonzero(truth))


def test_summed_confusions_pool_slides_like_one_concatenated_map():
    from magflow.evaluate.segmentation import confusion_scores, pixel_confusion, tile_coverage

    rng = np.random.default_rng(0)
    truths = [rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (3, 9))]
    preds = [rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (3, 9))]
    regions = [rng.random((5, 7)) < 0.7, rng.random((3, 9)) < 0.7]
    pooled = sum(pixel_confusion(t, p, r, n_classes=4) for t, p, r in zip(truths, preds, regions))
    got = confusion_scores(pooled)
    want = segmentation_scores(np.concatenate([t.ravel() for t in truths]),
                               np.concatenate([p.ravel() for p in preds]),
                               np.concatenate([r.ravel() for r in regions]))
    assert got == want
    # by hand: the pixels counted are labelled (truth != 0) and inside the region
    t = np.concatenate([x.ravel() for x in truths])
    p = np.concatenate([x.ravel() for x in preds])
    r = np.concatenate([x.ravel() for x in regions]) & (t != 0)
    assert got.n_pixels == r.sum() and got.pixel_accuracy == pytest.approx((t == p)[r].mean())
    for c in (1, 2, 3):
        both = ((t == c) & (p == c) & r).sum()
        assert got.per_class_iou[c] == pytest.approx(both / (((t == c) | (p == c)) & r).sum())
    # coverage: a 2 µm tile at (1, 0) covers mask pixels (1 µm) rows 0-1, cols 2-3
    covered = tile_coverage([[1, 0]], 2.0, (3, 5), 1.0)
    np.testing.assert_array_equal(np.argwhere(covered), [[0, 2], [0, 3], [1, 2], [1, 3]])
