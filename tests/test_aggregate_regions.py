"""Region sequences: token counts s(t, l), agreement with the tile store's region arithmetic, the region file."""

import h5py
import numpy as np
import pytest
import torch

from embed_fixtures import export_tiny_vit, smooth_field, write_analytic_store
from magflow.aggregate.region_embed import build_slide_regions
from magflow.aggregate.regions import SlideRegions, aligned_regions, region_layout, write_regions
from magflow.aggregate.synthetic import synthetic_scales, write_synthetic_regions
from magflow.embed.encoder import load_encoder
from magflow.errors import ConfigError
from magflow.preprocess.hierarchy import region_size
from magflow.preprocess.store import TileStore

SCALES = (0.5, 1.0, 2.0)


def closed_form(t: int, levels: int) -> int:
    return t * t * sum(4 ** (i - 1) for i in range(1, levels + 1))


@pytest.mark.parametrize("t", [1, 2, 3, 5])
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_region_size_matches_the_closed_form_and_the_tokens_cut(tmp_path, t, levels):
    factors = tuple(2 ** i for i in range(levels))
    assert region_size(t, levels) == closed_form(t, levels) == len(region_layout(t, factors))
    path = tmp_path / "r.h5"
    write_synthetic_regions(path, "s", seed=t, cols=2 * t, rows=t + 1, dim=4, t=t, factors=factors, tissue=1.0)
    regions = SlideRegions(path)
    cut = regions.sequences()
    assert cut.tokens.shape == (len(regions), closed_form(t, levels), 4)
    assert np.bincount(cut.scale_id).tolist() == [t * t * 4 ** s for s in range(levels)]
    assert closed_form(3, 3) == 189


def test_paper_layout_positions_nest():
    layout = region_layout(3, (1, 2, 4))
    assert len(layout) == 189 and layout.side == 12
    # every token's box lies inside its parent's box, one scale up
    for s in (1, 2):
        child = np.flatnonzero(layout.scale_id == s)
        parents = {tuple(p): i for i, p in zip(np.flatnonzero(layout.scale_id == s - 1),
                                               layout.local[layout.scale_id == s - 1])}
        for i in child:
            parent = parents[tuple(layout.local[i] // 2)]
            lo, hi = layout.position[parent], layout.position[parent] + layout.cell[parent]
            assert (layout.position[i] >= lo).all() and (layout.position[i] + layout.cell[i] <= hi).all()


@pytest.fixture(scope="module")
def store_and_regions(tmp_path_factory):
    """A 4×4 coarse-cell slide (32 px cells), with background at every scale, embedded by a tiny ViT."""
    root = tmp_path_factory.mktemp("regions")
    drop = {2.0: [(3, 3), (1, 0)], 1.0: [(0, 0), (5, 2)], 0.5: [(0, 0), (15, 15), (7, 3)]}
    store = write_analytic_store(root / "s.h5", smooth_field, size_um=256, cell_px=32, source_px=48, scales=SCALES,
                                 drop=drop)
    model = export_tiny_vit(root / "model")
    counts = build_slide_regions(store, root / "r.h5", model, t=3, progress=False, batch_size=7)
    return store, root / "r.h5", model, counts


def test_regions_agree_with_the_tile_store_and_mask_background(store_and_regions):
    store_path, path, model, counts = store_and_regions
    regions = SlideRegions(path)
    # blocks aligned to multiples of 3 on the 4×4 coarse grid; (3, 3) has no kept coarse tile
    assert regions.regions.tolist() == [[0, 0], [3, 0], [0, 3]]
    assert counts == {"n_regions": 3, "n_tokens": 189, "present_tokens": int(regions.sequences().valid.sum()),
                      "missing_tokens": 3 * 189 - int(regions.sequences().valid.sum())}
    encoder = load_encoder(model)
    with TileStore(store_path) as store:
        for corner, seq in zip(regions.regions, regions.sequences().tokens):
            tiles = store.region(int(corner[0]), int(corner[1]), 3, list(SCALES))
            cut = regions.cut(corner[None])
            assert (cut.valid[0] == tiles.present).all() and (cut.local == tiles.position).all()
            assert (cut.scale_id == tiles.scale).all()
            assert not cut.tokens[0][~tiles.present].any()  # background: zeros, flagged, not dropped
            # a present token is the encoder's embedding of that very tile (its centred 32 px cell)
            k = int(np.flatnonzero(tiles.present & (tiles.scale == 2))[5])
            mpp = sorted(SCALES, reverse=True)[tiles.scale[k]]
            patch = store.group(mpp)["images"][tiles.index[k]][8:40, 8:40]
            with torch.inference_mode():
                expected = encoder(torch.from_numpy(patch).permute(2, 0, 1)[None].float() / 255)[0].numpy()
            np.testing.assert_allclose(seq[k], expected, rtol=1e-4, atol=1e-5)
    with h5py.File(path) as h5:
        assert h5.attrs["t"] == 3 and h5.attrs["slide_id"] == "s" and "provenance" in h5.attrs
        assert h5["regions/coords"][1].tolist() == [3 * 64 / 0.25, 0]


def test_cutting_outside_the_grid_gives_background_not_wrapped_tiles(store_and_regions):
    regions = SlideRegions(store_and_regions[1])
    cut = regions.cut(np.array([[-3, -3], [-1, 0], [3, 3]]))
    assert not cut.valid[0].any()
    inside = regions.cut(np.array([[0, 0]]))
    # shifted one coarse cell left: the first coarse column is outside
    first_col = (cut.scale_id == 0) & (cut.local[:, 0] == 0)
    assert not cut.valid[1][first_col].any()
    shifted = (cut.scale_id == 0) & (cut.local[:, 0] == 1)
    np.testing.assert_array_equal(cut.tokens[1][shifted], inside.tokens[0][first_col])


def test_aligned_regions_need_a_coarse_tile():
    lookup = np.full((5, 7), -1)
    lookup[4, 6] = 0
    lookup[0, 1] = 1
    assert aligned_regions(lookup, 3).tolist() == [[0, 0], [6, 3]]
    assert aligned_regions(np.full((2, 2), -1), 3).shape == (0, 2)


def test_an_empty_slide_writes_an_empty_region_file(tmp_path):
    scales = synthetic_scales(np.random.default_rng(0), 3, 3, dim=4, tissue=0.0)
    for s in scales:
        s.grid, s.features = s.grid[:0], s.features[:0]
    counts = write_regions(tmp_path / "e.h5", "e", scales, 3, 0.25, {"model": "x"})
    assert counts["n_regions"] == 0 and len(SlideRegions(tmp_path / "e.h5")) == 0


def test_capped_or_incomplete_tile_sets_are_refused(store_and_regions, tmp_path):
    store_path, _, model, _ = store_and_regions
    with pytest.raises(ConfigError, match="no scale"):
        build_slide_regions(store_path, tmp_path / "x.h5", model, scales=(4.0, 2.0), progress=False)
    capped = write_analytic_store(tmp_path / "c.h5", smooth_field, size_um=128, cell_px=32, source_px=32,
                                  scales=SCALES)
    with h5py.File(capped, "a") as h5:
        h5.attrs["params"] = '{"name": "train", "max_tiles_per_scale": 32}'
    with pytest.raises(ConfigError, match="max_tiles_per_scale"):
        build_slide_regions(capped, tmp_path / "y.h5", model, progress=False)
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_embed_mean_patch_reaches_the_region_tokens(store_and_regions, tmp_path):
    """embed.mean_patch: the region tokens are [CLS, mean patch token], as the model's evaluation embeddings."""
    store_path, path, model, _ = store_and_regions
    build_slide_regions(store_path, tmp_path / "mean.h5", model, t=3, progress=False, mean_patch=True)
    plain, both = SlideRegions(path), SlideRegions(tmp_path / "mean.h5")
    plain_tokens, both_tokens = plain.sequences().tokens, both.sequences().tokens
    width = plain_tokens.shape[-1]
    assert both_tokens.shape[-1] == 2 * width
    np.testing.assert_allclose(both_tokens[..., :width], plain_tokens, rtol=1e-5, atol=1e-5)
    with h5py.File(tmp_path / "mean.h5") as f:
        assert "mean" in str(f.attrs["features"])
