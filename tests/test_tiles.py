"""Nested grids, the HDF5 tile store, hierarchy arithmetic and extraction on pixels."""

from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from magflow.errors import SlideError
from magflow.preprocess import extract_tiles as extract_module
from magflow.preprocess.dataset import TileDataset
from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles
from magflow.preprocess.hierarchy import children, grandchildren, parent, region_size
from magflow.preprocess.mask_store import write_mask
from magflow.preprocess.store import TileStore
from magflow.preprocess.tiling import make_grid, nest_factor, select_cells, tissue_fractions
from magflow.preprocess.tissue import TissueMask
from magflow.slides.reader import Slide
from wsi_factory import write_wsi

TRAIN = TileSetParams("train", [0.25, 0.5, 1.0, 2.0], cell_px=224, source_px=448, min_tissue=0.5)


def smooth_texture(size: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture: every tile is distinct, JPEG error stays small."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 230, (size // 32 + 2, size // 32 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size + 64, size + 64), Image.Resampling.BICUBIC))[:size, :size]


def write_full_mask(path, width_um, height_um, mpp=8.0, blank=False):
    mask = np.zeros((int(height_um / mpp), int(width_um / mpp)), bool) if blank else \
        np.ones((int(height_um / mpp), int(width_um / mpp)), bool)
    write_mask(path, TissueMask(mask, mpp, 0.1), {"slide_id": "x"}, {})
    return path


@pytest.fixture(scope="module")
def slide_025(tmp_path_factory):
    """3584 px at 0.25 mpp = 896 µm: 2×2 cells at 2.0 mpp; tissue everywhere."""
    root = tmp_path_factory.mktemp("tiles")
    path = write_wsi(root / "s.svs", smooth_texture(3584), mpp=0.25, levels=4)
    return path, write_full_mask(root / "m.h5", 896, 896)


@pytest.fixture(scope="module")
def train_store(slide_025, tmp_path_factory):
    slide, mask = slide_025
    out = tmp_path_factory.mktemp("out") / "train.h5"
    extract_tiles(slide, "s", mask, out, TRAIN, progress=False)
    return out


# -- pure grid arithmetic ---------------------------------------------------------------------

def test_grids_nest_exactly():
    g1, g05, g025 = (make_grid(m, m, 224, 0.25, (3584, 3584)) for m in (1.0, 0.5, 0.25))
    assert (g1.cols, g05.cols, g025.cols) == (4, 8, 16)
    assert nest_factor(g1, g05) == 2 and nest_factor(g1, g025) == 4
    mad = [make_grid(m, m, 224, 0.25, (14336, 14336)) for m in (4.0, 1.0, 0.25)]
    assert nest_factor(mad[0], mad[1]) == 4 and nest_factor(mad[0], mad[2]) == 16
    # a coarse cell's level-0 origin is its first child's origin
    assert (g1.coords(np.array([[3, 2]])) == g025.coords(np.array([[12, 8]]))).all()
    with pytest.raises(ValueError, match="do not nest"):
        nest_factor(make_grid(0.75, 0.75, 224, 0.25, (3584, 3584)), g05)


def test_tissue_fractions_exact_and_consistent_across_scales():
    rng = np.random.default_rng(3)
    mask = rng.random((61, 47)) > 0.4
    grids = [make_grid(m, m, 224, 0.25, (47 * 32, 61 * 32)) for m in (0.5, 1.0)]
    fine, coarse = (tissue_fractions(mask, 8.0, g) for g in grids)
    # independent computation: the mask at 1 µm/px, averaged over each 112 µm cell
    up = np.repeat(np.repeat(mask, 8, 0), 8, 1).astype(float)
    rows, cols = fine.shape
    expected = up[:rows * 112, :cols * 112].reshape(rows, 112, cols, 112).mean(axis=(1, 3))
    assert np.allclose(fine, expected, atol=1e-6)
    r, c = coarse.shape
    assert np.allclose(coarse, fine[:2 * r, :2 * c].reshape(r, 2, c, 2).mean(axis=(1, 3)), atol=1e-6)


def test_tissue_fractions_with_fractional_cells_match_a_pixel_by_pixel_overlap():
    """A 0.499 mpp scan: cells are 13.972 mask pixels wide, so edges cut pixels; and the grid may
    reach past the mask, which counts as background."""
    rng = np.random.default_rng(4)
    mask = rng.random((30, 40)) > 0.5  # 320 × 240 µm at 8 mpp
    grid = make_grid(0.5, 0.499, 224, 0.499, (700, 500))  # 349 × 250 µm: wider than the mask
    cell = grid.cell_um / 8.0
    expected = np.zeros((grid.rows, grid.cols))
    for r in range(grid.rows):
        for c in range(grid.cols):
            for y in range(mask.shape[0]):
                for x in range(mask.shape[1]):
                    dx = min((c + 1) * cell, x + 1) - max(c * cell, x)
                    dy = min((r + 1) * cell, y + 1) - max(r * cell, y)
                    expected[r, c] += mask[y, x] * max(dx, 0) * max(dy, 0)
    assert grid.cols * cell > mask.shape[1]  # the last column reaches past the mask
    assert np.allclose(tissue_fractions(mask, 8.0, grid), expected / cell ** 2, atol=1e-6)


def test_select_cells_caps_with_a_seed():
    fractions = np.array([[0.9, 0.2, 0.6], [0.5, 0.49, 1.0]], np.float32)
    cells, available = select_cells(fractions, 0.5, None, np.random.default_rng(0))
    assert available == 4 and cells.tolist() == [[0, 0], [2, 0], [0, 1], [2, 1]]  # (col, row) raster order
    capped = [select_cells(fractions, 0.5, 2, np.random.default_rng(s))[0].tolist() for s in (1, 1, 2)]
    assert capped[0] == capped[1] and len(capped[0]) == 2


def test_children_parent_round_trip_and_region_size():
    kids = children(3, 5, 4)
    assert len(kids) == 16 and kids[0].tolist() == [12, 20] and kids[5].tolist() == [13, 21]
    for k, (i, j) in enumerate(kids):
        assert parent(int(i), int(j), 4) == (3, 5, k)
    grand = grandchildren(1, 2, 4)
    assert len(grand) == 256 and len({(g[0], g[1]) for g in grand}) == 256
    assert grand[:, 0].min() == 16 and grand[:, 0].max() == 31 and grand[:, 1].min() == 32
    assert region_size(3, 3) == 189 and region_size(3, 1) == 9 and region_size(1, 2) == 5


# -- the store -----------------------------------------------------------------------------------

def test_store_layout_counts_and_attributes(train_store):
    with TileStore(train_store) as store:
        assert store.scales == [0.25, 0.5, 1.0, 2.0]
        for mpp, cells in zip(store.scales, (256, 64, 16, 4)):
            group = store.group(mpp)
            assert group.name == f"/mpp_{mpp:.3f}"
            assert group["images"].shape == (cells, 448, 448, 3) and group["images"].chunks == (1, 448, 448, 3)
            assert group["coords"].dtype == np.int64 and group["grid"].shape == (cells, 2)
            assert np.allclose(group["tissue"][...], 1.0)
            attrs = group.attrs
            assert attrs["mpp"] == mpp and attrs["target_mpp"] == mpp and attrs["cell_px"] == 224
            assert attrs["source_px"] == 448 and attrs["interpolation"] == "area"
            assert attrs["available"] == attrs["kept"] == cells
            # every scale is cut from the finest scale's pixels, not from the coarser stored levels
            assert attrs["read_level"] == 0 and attrs["scale_factor"] == pytest.approx(mpp / 0.25)
            # coords = level-0 top-left of the cell
            assert (group["coords"][...] == group["grid"][...] * round(224 * mpp / 0.25)).all()
        assert store.attrs["mpp_source"] == "openslide.mpp" and store.attrs["tileset"] == "train"
        slide = store.json_attr("slide")
        assert len(slide["sha256_first_mib"]) == 64 and slide["size_bytes"] > 0
        assert store.json_attr("params")["source_px"] == 448 and store.attrs["magflow_version"]


def test_child_pixels_equal_the_resampled_quarter_of_the_parent(train_store):
    """The nesting holds on pixels: each 0.5 mpp child's cell, area-halved, is a quarter of its 1.0 parent."""
    with TileStore(train_store) as store:
        m = (448 - 224) // 2
        for parent_row in range(len(store.group(1.0)["grid"])):
            parent_cell = store.group(1.0)["images"][parent_row][m:m + 224, m:m + 224].astype(float)
            kids = store.children(1.0, 0.5, parent_row)
            assert (kids >= 0).all() and len(kids) == 4
            for k, row in enumerate(kids):
                child = store.group(0.5)["images"][row][m:m + 224, m:m + 224].astype(float)
                halved = child.reshape(112, 2, 112, 2, 3).mean(axis=(1, 3))
                qx, qy = (k % 2) * 112, (k // 2) * 112
                assert np.abs(halved - parent_cell[qy:qy + 112, qx:qx + 112]).mean() < 1.0


def test_tiles_match_an_independent_read_at_their_mpp(train_store, slide_025):
    """Each stored patch equals OpenSlide's level-0 pixels of its window, block-averaged in numpy."""
    with TileStore(train_store) as store, Slide(slide_025[0], fast_decode=False) as slide:
        for mpp in store.scales:
            group = store.group(mpp)
            k = round(mpp / 0.25)
            for row in (0, len(group["grid"]) // 2, len(group["grid"]) - 1):
                x, y = group["coords"][row]
                margin0 = (448 - 224) // 2 * k
                level0 = slide.read_level(0, x - margin0, y - margin0, 448 * k, 448 * k).astype(float)
                expected = level0.reshape(448, k, 448, k, 3).mean(axis=(1, 3))
                assert np.abs(expected - group["images"][row]).max() <= 0.5, (mpp, row)


def test_blocks_do_not_change_the_result(slide_025, train_store, tmp_path, monkeypatch):
    """Many small blocks (and 2 worker processes) give the same pixels as one big block."""
    monkeypatch.setattr(extract_module, "BLOCK_FINEST_PX", 1)
    out = tmp_path / "small_blocks.h5"
    extract_tiles(slide_025[0], "s", slide_025[1], out, TRAIN, progress=False, workers=2)
    with h5py.File(out) as a, h5py.File(train_store) as b:
        for name in b:
            assert np.array_equal(a[name]["images"][...], b[name]["images"][...]), name


def test_workers_sharing_one_block_give_the_same_pixels(slide_025, train_store, tmp_path, monkeypatch):
    """The whole slide is one block, so 2 workers split its decode, reductions and copies instead."""
    banded = []
    plain = extract_module.box_reduce

    def spy(image, factor, pool=None, threads=1):
        banded.append(pool is not None and threads == 2)
        return plain(image, factor, pool, threads)

    monkeypatch.setattr(extract_module, "box_reduce", spy)
    out = tmp_path / "shared_block.h5"
    extract_tiles(slide_025[0], "s", slide_025[1], out, TRAIN, progress=False, workers=2)
    assert banded and all(banded)
    with h5py.File(out) as a, h5py.File(train_store) as b:
        for name in b:
            assert np.array_equal(a[name]["images"][...], b[name]["images"][...]), name


@pytest.mark.parametrize("block_px", [4096, 1])
def test_scales_whose_factors_do_not_divide_each_other(slide_025, tmp_path, monkeypatch, block_px):
    """0.25/0.5/0.75 mpp: factors 1, 2, 3. Blocks start on multiples of 6 and a block without
    finest tiles is read at the gcd of its factors, so every tile is still its window's exact mean."""
    monkeypatch.setattr(extract_module, "BLOCK_FINEST_PX", block_px)
    params = TileSetParams("odd", [0.25, 0.5, 0.75], cell_px=224, source_px=256, min_tissue=0.5,
                           max_tiles_per_scale=3, seed=1)
    out = tmp_path / "odd.h5"
    extract_tiles(slide_025[0], "s", slide_025[1], out, params, progress=False)
    with TileStore(out) as store, Slide(slide_025[0], fast_decode=False) as slide:
        assert store.scales == [0.25, 0.5, 0.75]
        for mpp, k in ((0.25, 1), (0.5, 2), (0.75, 3)):
            group = store.group(mpp)
            assert len(group["grid"]) == 3
            for row in range(3):
                x, y = group["coords"][row]
                margin0 = (256 - 224) // 2 * k
                level0 = slide.read_level(0, x - margin0, y - margin0, 256 * k, 256 * k).astype(float)
                expected = level0.reshape(256, k, 256, k, 3).mean(axis=(1, 3))
                assert np.abs(expected - group["images"][row]).max() <= 0.5, (mpp, row)


def test_mad_children_and_region_lookup(tmp_path):
    """MAD scales 4.0/1.0/0.25 on an 896 µm slide: one 4.0 cell with 16 aligned children at 1.0."""
    slide = write_wsi(tmp_path / "mad.svs", smooth_texture(3584, seed=2), mpp=0.25, levels=5)
    out = tmp_path / "mad.h5"
    extract_tiles(slide, "mad", write_full_mask(tmp_path / "m.h5", 896, 896), out,
                  TileSetParams("mad", [4.0, 1.0, 0.25], 224, 224, 0.5), progress=False)
    with TileStore(out) as store:
        assert store.scales == [0.25, 1.0, 4.0]
        assert [len(store.group(m)["grid"]) for m in (4.0, 1.0, 0.25)] == [1, 16, 256]
        kids = store.children(4.0, 1.0, 0)
        assert len(kids) == 16 and (kids >= 0).all() and len(store.children(4.0, 0.25, 0)) == 256
        parent_img = store.group(4.0)["images"][0].astype(float)
        for k, row in enumerate(kids):
            child = store.group(1.0)["images"][row].astype(float).reshape(56, 4, 56, 4, 3).mean(axis=(1, 3))
            qx, qy = (k % 4) * 56, (k // 4) * 56
            assert np.abs(child - parent_img[qy:qy + 56, qx:qx + 56]).mean() < 1.0
        # a 2×2 region at 4.0 mpp where only one coarse cell exists: the rest is flagged missing, not dropped
        tiles = store.region(0, 0, 2, [4.0, 1.0, 0.25])
        assert len(tiles.index) == region_size(2, 3, factor=4) == 4 * (1 + 16 + 256)
        assert tiles.present.sum() == region_size(1, 3, factor=4)
        assert (tiles.scale[tiles.present] == np.repeat([0, 1, 2], [1, 16, 256])).all()


def test_scale_finer_than_the_slide_is_skipped_and_recorded(tmp_path):
    slide = write_wsi(tmp_path / "20x.svs", smooth_texture(1792), mpp=0.5, levels=3)
    out = tmp_path / "s.h5"
    result = extract_tiles(slide, "s20x", write_full_mask(tmp_path / "m.h5", 896, 896), out, TRAIN, progress=False)
    assert result["skipped"] == [0.25]
    with TileStore(out) as store:
        assert store.scales == [0.5, 1.0, 2.0]
        skipped = store.json_attr("skipped_scales")
        assert skipped[0]["target_mpp"] == 0.25 and "never upsamples" in skipped[0]["reason"]


def test_real_slide_scales_attributes_and_nesting(real_slide, tmp_path):
    from magflow.preprocess.tissue import TissueParams
    from magflow.preprocess.tissue_mask import make_tissue_mask
    mask = tmp_path / "m.h5"
    make_tissue_mask(real_slide, "cmu", mask, tmp_path / "qc.png", TissueParams())
    out = tmp_path / "cmu.h5"
    extract_tiles(real_slide, "cmu", mask, out, TRAIN, progress=False)
    with TileStore(out) as store:
        assert store.scales == [0.5, 1.0, 2.0]  # 0.25 refused on a 0.499 mpp scan
        achieved = [float(store.group(m).attrs["mpp"]) for m in store.scales]
        assert achieved == pytest.approx([0.499, 0.998, 1.996])  # snapped to the scan, nested exactly
        assert store.attrs["slide_id"] == "cmu" and store.json_attr("slide")["decoder"] == "tifffile"
        counts = store.json_attr("counts")
        assert counts["0.5"]["kept"] >= 4 * counts["1"]["kept"] > 0
        m = 112
        for parent_row in range(len(store.group(1.0)["grid"])):
            parent_cell = store.group(1.0)["images"][parent_row][m:m + 224, m:m + 224].astype(float)
            for k, row in enumerate(store.children(1.0, 0.5, parent_row)):
                if row < 0:
                    continue  # background child: flagged, not stored
                child = store.group(0.5)["images"][row][m:m + 224, m:m + 224].astype(float)
                halved = child.reshape(112, 2, 112, 2, 3).mean(axis=(1, 3))
                qx, qy = (k % 2) * 112, (k // 2) * 112
                assert np.abs(halved - parent_cell[qy:qy + 112, qx:qx + 112]).mean() < 1.0


# -- bad input ------------------------------------------------------------------------------------

def test_empty_mask_gives_an_empty_valid_store(slide_025, tmp_path):
    out = tmp_path / "empty.h5"
    result = extract_tiles(slide_025[0], "blank", write_full_mask(tmp_path / "m.h5", 896, 896, blank=True),
                           out, TRAIN, progress=False)
    assert "tissue mask is empty" in result["empty_reason"]
    with TileStore(out) as store:
        assert len(store) == 0 and store.scales == [0.25, 0.5, 1.0, 2.0]
        assert "tissue mask is empty" in store.attrs["empty_reason"]
        assert store.group(0.5)["images"].shape == (0, 448, 448, 3)


def test_corrupt_tiles_fail_the_slide_and_leave_no_file(tmp_path):
    import tifffile
    path = write_wsi(tmp_path / "bad.svs", smooth_texture(1792), mpp=0.25, levels=1)
    with tifffile.TiffFile(path) as tif:
        offsets = tif.pages[0].dataoffsets
    data = bytearray(path.read_bytes())
    for offset in offsets[len(offsets) // 2:]:
        data[offset:offset + 4] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    out = tmp_path / "out" / "bad.h5"
    with pytest.raises(SlideError, match="bad_slide"):
        extract_tiles(path, "bad_slide", write_full_mask(tmp_path / "m.h5", 448, 448), out,
                      TileSetParams("t", [0.25, 0.5], 224, 224, 0.5), progress=False)
    assert not out.exists() and not list(out.parent.glob("*"))


def test_bad_tileset_parameters_name_the_key(slide_025, tmp_path):
    from magflow.errors import ConfigError
    with pytest.raises(ConfigError, match="tilesets.odd: source_px"):
        extract_tiles(slide_025[0], "s", slide_025[1], tmp_path / "x.h5",
                      TileSetParams("odd", [0.5], 224, 225), progress=False)
    with pytest.raises(ConfigError, match="tilesets.odd.jpeg_quality: must be an integer from 1 to 100"):
        extract_tiles(slide_025[0], "s", slide_025[1], tmp_path / "x.h5",
                      TileSetParams("odd", [0.5], jpeg_quality=0), progress=False)
    assert not (tmp_path / "x.h5").exists()


# -- JPEG-in-HDF5 ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jpeg_store(slide_025, tmp_path_factory):
    out = tmp_path_factory.mktemp("jpeg") / "train_q90.h5"
    extract_tiles(slide_025[0], "s", slide_025[1], out, replace(TRAIN, jpeg_quality=90), progress=False)
    return out


def test_jpeg_store_holds_the_same_tiles_within_jpeg_error_and_is_smaller(jpeg_store, train_store):
    with TileStore(jpeg_store) as jpeg, TileStore(train_store) as raw:
        assert jpeg.scales == raw.scales
        for mpp in raw.scales:
            group = jpeg.group(mpp)
            assert "images" not in group and group.attrs["encoding"] == "jpeg" and group.attrs["jpeg_quality"] == 90
            assert raw.group(mpp).attrs["encoding"] == "raw"
            assert np.array_equal(group["grid"][...], raw.group(mpp)["grid"][...])
            decoded, stored = jpeg.images(mpp), raw.images(mpp)
            assert decoded.shape == stored.shape == (len(group["grid"]), 448, 448, 3)
            error = np.abs(decoded[:].astype(int) - stored[:])
            assert 0 < error.mean() < 2.0 and error.max() < 40, mpp
    assert jpeg_store.stat().st_size < train_store.stat().st_size / 4


def test_tile_images_index_like_an_array(jpeg_store, train_store):
    for path in (jpeg_store, train_store):
        with TileStore(path) as store:
            images = store.images(1.0)
            stack = images[:]
            assert np.array_equal(images[3], stack[3]) and np.array_equal(images[-1], stack[-1])
            assert np.array_equal(images[[5, 2]], stack[[5, 2]]) and np.array_equal(images[2:6:2], stack[2:6:2])
            with pytest.raises(IndexError, match="out of range for 16 tiles in /mpp_1.000"):
                images[16]


def test_a_damaged_jpeg_tile_names_the_store_and_what_to_do(jpeg_store, tmp_path):
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(jpeg_store.read_bytes())
    with h5py.File(damaged, "r+") as h5:
        h5["mpp_2.000"]["images_jpeg"][1] = np.frombuffer(b"not a jpeg", np.uint8)
    with TileStore(damaged) as store:
        store.images(2.0)[0]  # the others still read
        with pytest.raises(ValueError, match=r"damaged.h5: tile 1 of /mpp_2.000 is not a readable JPEG.*extract it again"):
            store.images(2.0)[1]


def test_jpeg_tiles_through_the_dataset_and_with_workers(jpeg_store, slide_025, tmp_path):
    dataset = TileDataset([jpeg_store], scales=[2.0])
    with TileStore(jpeg_store) as store:
        assert torch.equal(dataset[1]["image"], torch.from_numpy(store.images(2.0)[1]).permute(2, 0, 1))
    again = tmp_path / "again.h5"  # 2 workers sharing the one block encode the same bytes
    extract_tiles(slide_025[0], "s", slide_025[1], again, replace(TRAIN, jpeg_quality=90), progress=False,
                  workers=2)
    with h5py.File(again) as a, h5py.File(jpeg_store) as b:
        for name in b:
            assert all(np.array_equal(x, y) for x, y in zip(a[name]["images_jpeg"], b[name]["images_jpeg"]))


# -- the dataset -----------------------------------------------------------------------------------

def test_dataset_over_many_files_with_workers(train_store, tmp_path, slide_025):
    second = tmp_path / "second.h5"
    extract_tiles(slide_025[0], "s2", slide_025[1], second, TileSetParams("t", [1.0, 2.0], 224, 448, 0.5),
                  progress=False)
    dataset = TileDataset([train_store, second], scales=[1.0, 2.0])
    assert len(dataset) == (16 + 4) * 2
    loader = DataLoader(dataset, batch_size=8, num_workers=2, shuffle=False)
    images, mpps, slides = [], [], []
    for batch in loader:
        images.append(batch["image"])
        mpps += batch["mpp"].tolist()
        slides += list(batch["slide"])
    images = torch.cat(images)
    assert images.shape == (40, 3, 448, 448)
    with TileStore(second) as store:  # the loader returns the stored pixels, channels first
        assert torch.equal(images[-1], torch.from_numpy(store.group(2.0)["images"][3]).permute(2, 0, 1))
    assert sorted(set(mpps)) == [1.0, 2.0] and set(slides) == {"s", "s2"}
    item = dataset[len(dataset) - 1]
    assert item["image"].dtype == torch.uint8 and item["slide"] == "s2" and item["mpp"] == 2.0


def test_nested_caps_keep_every_ancestor_of_the_drawn_finest_cells(slide_025, tmp_path):
    """With nested caps the cap is drawn at the finest scale and coarser scales keep exactly the ancestors,
    so every tile's tissue centre has a source patch at every scale (the seed protocol)."""
    params = TileSetParams("eval", [0.25, 0.5, 1.0, 2.0], 224, 512, 0.5, max_tiles_per_scale=5, seed=3,
                           nested=True)
    out = tmp_path / "nested.h5"
    extract_tiles(slide_025[0], "s", slide_025[1], out, params, progress=False)
    with TileStore(out) as store:
        finest = store.group(0.25)["grid"][...]
        assert len(finest) == 5 and store.group(0.25).attrs["available"] == 256
        for mpp, factor in ((0.5, 2), (1.0, 4), (2.0, 8)):
            kept = {tuple(c) for c in store.group(mpp)["grid"][...]}
            assert kept == {tuple(c) for c in finest // factor}, mpp
            assert store.group(mpp).attrs["nested"]
