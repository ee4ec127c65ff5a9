"""The view protocol's ``nearest_scale`` path: every view centred on its tile, at the right physical scale, from the
next finer source (the ``finest`` path: tests/test_embed_resample.py)."""

import numpy as np
import pytest

from embed_fixtures import blob_field, render, smooth_field, write_analytic_store
from magflow.embed.protocol import NEAREST_SCALE, PROFILE_MPPS, min_source_px, plan_views, read_anchors
from magflow.embed.embed import preview_views
from magflow.preprocess.store import TileStore

C = 32  # cell px; the anchor cell at 0.25 mpp is 8 µm
NEXT_FINER = {0.25: 0.25, 0.375: 0.25, 0.5: 0.5, 0.75: 0.5, 1.0: 1.0, 1.5: 1.0, 2.0: 2.0}


@pytest.fixture(scope="module")
def smooth_store(tmp_path_factory):
    return write_analytic_store(tmp_path_factory.mktemp("smooth") / "s.h5", smooth_field, source_px=72)


def plans_of(path, mpps=PROFILE_MPPS, anchor=0.25, resample=NEAREST_SCALE):
    with TileStore(path) as store:
        anchors = read_anchors(store, anchor)
        return anchors, {t: plan_views(store, anchors, t, resample) for t in mpps}


def expected_view(field, anchors, tile, mpp, shift_um=0.0):
    """The C px view at ``mpp`` centred on the tile's centre, sampled straight from the analytic image."""
    centre = (anchors.grid[tile] + 0.5) * anchors.cell_um + shift_um
    return render(field, centre[0] - C / 2 * mpp, centre[1] - C / 2 * mpp, C, mpp).astype(float)


def test_views_are_centred_on_the_tile_at_the_right_scale_at_every_mpp(smooth_store):
    anchors, plans = plans_of(smooth_store)
    assert len(anchors) == 16 * 16
    for t, plan in plans.items():
        assert plan.valid.all(), (t, plan.reason)
        assert plan.view_mpp == pytest.approx(t) and plan.centre_error_px == 0
        tiles, views = preview_views(smooth_store, plan)
        assert sorted(tiles.tolist()) == list(range(len(anchors)))
        for tile, view in list(zip(tiles, views))[::17]:
            error = np.abs(view - expected_view(smooth_field, anchors, tile, t)).mean()
            assert error < 2.5, (t, tile, error)
            # sensitivity: the same view 2 µm off centre, or at a 10 % different scale, is far worse
            shifted = expected_view(smooth_field, anchors, tile, t, shift_um=2.0)
            assert np.abs(view - shifted).mean() > 4 * error + 2
            assert np.abs(view - expected_view(smooth_field, anchors, tile, 1.1 * t)).mean() > 3 * error + 1


def test_a_spot_on_one_tile_centre_stays_at_the_view_centre(tmp_path):
    col, row = 5, 6
    cx, cy, sigma = (col + 0.5) * 8.0, (row + 0.5) * 8.0, 4.0
    path = write_analytic_store(tmp_path / "spot.h5", blob_field(cx, cy, sigma), source_px=72)
    anchors, plans = plans_of(path)
    tile = int(np.flatnonzero((anchors.grid == [col, row]).all(axis=1))[0])
    for t, plan in plans.items():
        tiles, views = preview_views(path, plan)
        weights = views[list(tiles).index(tile), :, :, 0].astype(float) - 10
        weights = np.clip(weights, 0, None)
        ys, xs = np.mgrid[0:C, 0:C] + 0.5
        centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
        assert centroid == pytest.approx([C / 2, C / 2], abs=0.05), t
        if t >= 1.0:  # the view spans ±4σ or more: its spread measures the pixel size
            spread = np.sqrt((weights * ((xs - C / 2) ** 2)).sum() / weights.sum())
            assert spread * t == pytest.approx(sigma, rel=0.08), t


def test_intermediate_mpps_come_from_the_next_finer_standard_scale_and_never_upsample(tmp_path):
    # achieved mpps 1 % coarser than nominal (0.2525, 0.505, ...): standard targets take the C px crop as is
    path = write_analytic_store(tmp_path / "off.h5", smooth_field, achieved=1.01)
    _, plans = plans_of(path, mpps=(*PROFILE_MPPS, 0.2))
    for t in PROFILE_MPPS:
        plan = plans[t]
        assert plan.source_mpp == NEXT_FINER[t] and plan.source_achieved == pytest.approx(1.01 * NEXT_FINER[t])
        assert plan.crop_px >= C and plan.valid.all()
        assert plan.crop_px == (C if t == NEXT_FINER[t] else round(C * t / plan.source_achieved))
        assert plan.view_mpp >= plan.source_achieved  # no upsampling: the view is never finer than its source
    assert plans[0.25].view_mpp == pytest.approx(0.2525)
    assert plans[0.375].crop_px == 48 and plans[0.375].view_mpp == pytest.approx(0.2525 * 48 / 32)
    assert not plans[0.2].valid.any() and "no stored scale" in plans[0.2].reason


def test_eval_geometry_which_tiles_each_source_size_serves(tmp_path):
    # S = 1.75·C, the eval tile set's 392/224: 0.75 mpp cannot be centred on a finest-cell centre
    path = write_analytic_store(tmp_path / "s56.h5", smooth_field, source_px=56)
    _, plans = plans_of(path)
    fractions = {t: plan.valid.mean() for t, plan in plans.items()}
    assert fractions == {0.25: 1, 0.375: 1, 0.5: 1, 0.75: 0, 1.0: 1, 1.5: 1 / 4, 2.0: 36 / 64}
    reason = plans[0.75].reason
    assert "256 tiles: their 48 px window at 0.5 mpp" in reason and "source_px ≥ 64" in reason
    needs = {t: min_source_px(C, 0.25, NEXT_FINER[t], t) for t in PROFILE_MPPS}
    assert needs == {0.25: 32, 0.375: 48, 0.5: 48, 0.75: 64, 1.0: 56, 1.5: 72, 2.0: 60}
    assert max(min_source_px(224, 0.25, NEXT_FINER[t], t) for t in PROFILE_MPPS) == 504
    assert min_source_px(224, 1.0, 0.25, 0.375) == 560  # a 1.0 mpp anchor is a corner of the finer grids


def test_tiles_without_a_kept_ancestor_are_skipped_and_counted(tmp_path):
    path = write_analytic_store(tmp_path / "gap.h5", smooth_field, drop={0.5: [(1, 1)], 2.0: [(0, 0)]})
    anchors, plans = plans_of(path)
    children = {(c, r) for c in (2, 3) for r in (2, 3)}
    for t in (0.5, 0.75):
        invalid = {tuple(g) for g in anchors.grid[~plans[t].valid].tolist()}
        assert invalid == children and "of 256 tiles, 4 tiles: the 0.5 mpp cells" in plans[t].reason
    # of the 8×8 anchors under the missing 2.0 mpp cell, those of its last column or row fit in a neighbour's patch
    assert (~plans[2.0].valid).sum() == 7 * 7
    assert plans[0.25].valid.all() and plans[1.0].valid.all() and plans[1.5].valid.all()


def test_a_coarser_anchor_is_served_from_the_cell_holding_its_centre(tmp_path):
    path = write_analytic_store(tmp_path / "s.h5", smooth_field, source_px=96)
    anchors, plans = plans_of(path, mpps=(0.5, 1.0), anchor=1.0)
    assert anchors.cell_um == 32 and plans[1.0].valid.all() and plans[1.0].centre_error_px == 0
    tiles, views = preview_views(path, plans[0.5])
    assert plans[0.5].valid.all()  # S = 96 ≥ 32 + 32: the 1.0 mpp centre is a 0.5 mpp grid corner
    for tile, view in zip(tiles, views):
        assert np.abs(view - expected_view(smooth_field, anchors, tile, 0.5)).mean() < 2.5
