"""The tile manifest: `available` and `kept` mean what they say, for nested tile sets too."""

import csv

import numpy as np

from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles
from magflow.preprocess.tile_manifest import write_manifest
from magflow.preprocess.mask_store import write_mask
from magflow.preprocess.store import TileStore
from magflow.preprocess.tissue import TissueMask
from test_tiles import smooth_texture
from wsi_factory import write_wsi


def corner_slide(root):
    """448 µm at 0.25 mpp with tissue only in its top-left 112 µm: 2×2 finest cells (56 µm) are all tissue,
    but the 224 µm and 448 µm cells that hold them are a quarter and a sixteenth tissue."""
    slide = write_wsi(root / "s.svs", smooth_texture(1792), mpp=0.25, levels=3)
    mask = np.zeros((56, 56), bool)
    mask[:14, :14] = True  # 8 mpp: 14 px = 112 µm
    write_mask(root / "m.h5", TissueMask(mask, 8.0, float(mask.mean())), {"slide_id": "s"}, {})
    return slide, root / "m.h5"


def read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_a_nested_manifest_never_keeps_more_than_available(tmp_path):
    slide, mask = corner_slide(tmp_path)
    params = TileSetParams("eval", [0.25, 0.5, 1.0, 2.0], 224, 224, 0.5, max_tiles_per_scale=2, seed=0, nested=True)
    store = tmp_path / "tiles" / "s.h5"
    extract_tiles(slide, "s", mask, store, params, progress=False)
    with TileStore(store) as tiles:  # the coarse cells are kept as ancestors, whatever their own tissue
        assert [len(tiles.group(m)["grid"]) for m in (0.25, 0.5, 1.0, 2.0)] == [2, 1, 1, 1]
        assert float(tiles.group(1.0)["tissue"][0]) < 0.5
    rows = write_manifest([store], {"s": "test"}, "eval", tmp_path / "manifest.tsv", tmp_path / "manifest.html")
    by_mpp = {row["target_mpp"]: row for row in read_tsv(tmp_path / "manifest.tsv")}
    assert [(by_mpp[m]["available"], by_mpp[m]["kept"]) for m in ("0.25", "0.5", "1.0", "2.0")] == \
        [("4", "2"), ("1", "1"), ("1", "1"), ("1", "1")]
    assert all(row["kept"] <= row["available"] for row in rows)
    assert by_mpp["0.25"]["selection"] == "tissue ≥ 0.5, 2 drawn at random (max_tiles_per_scale)"
    assert by_mpp["1.0"]["selection"] == "nested: the 1 mpp cells holding the kept 0.25 mpp tiles"
    assert "selection" in (tmp_path / "manifest.html").read_text()


def test_an_independent_set_counts_cells_with_enough_tissue(tmp_path):
    slide, mask = corner_slide(tmp_path)
    params = TileSetParams("train", [0.25, 1.0], 224, 224, 0.5, seed=0)
    store = tmp_path / "s.h5"
    extract_tiles(slide, "s", mask, store, params, progress=False)
    write_manifest([store], {}, "train", tmp_path / "manifest.tsv", tmp_path / "manifest.html")
    by_mpp = {row["target_mpp"]: row for row in read_tsv(tmp_path / "manifest.tsv")}
    assert (by_mpp["0.25"]["available"], by_mpp["0.25"]["kept"], by_mpp["0.25"]["selection"]) == ("4", "4", "tissue ≥ 0.5")
    assert (by_mpp["1.0"]["available"], by_mpp["1.0"]["kept"]) == ("0", "0")
