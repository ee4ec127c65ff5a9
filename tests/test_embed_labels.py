"""Tile labels from a label mask (phantom ground truth) and from a tile-label CSV."""

import numpy as np
import pytest

from embed_fixtures import write_label_mask
from magflow.embed.labels import LabelMask, TileTable, mask_labels, read_label_mask, tile_labels
from magflow.errors import ConfigError
from magflow.phantom.slide import CLASS_NAMES, PhantomSpec, phantom_layout


def anchor_table(slide, cols, rows, cell_um=56.0, slide_mpp=0.25):
    grid = np.array([(c, r) for r in range(rows) for c in range(cols)], np.int64)
    start = grid * cell_um
    return TileTable(np.array([slide] * len(grid), dtype=object), grid, np.rint(start / slide_mpp).astype(np.int64),
                     np.concatenate([start, start + cell_um], axis=1))


def test_mask_majority_is_area_weighted_and_background_is_unknown():
    labels = np.array([[1, 1, 2, 2],
                       [1, 1, 2, 2],
                       [0, 0, 0, 3],
                       [0, 0, 0, 3]], np.uint8)
    mask = LabelMask(labels, 2.0, ["glass", "a", "b", "c"])
    # boxes in µm (x0, y0, x1, y1); mask pixels are 2 µm
    boxes = np.array([[0, 0, 4, 4],                  # all class 1
                      [1, 0, 7, 4],                  # 1.5 columns of class 1, 1.5 of class 2: a tie goes to 1
                      [2, 0, 8, 4],                  # 1 column of class 1, 2 of class 2
                      [0, 4, 8, 8],                  # mostly background: unknown
                      [5, 4, 8, 8],                  # half a column of background, one of class 3
                      [100, 100, 110, 110]], float)  # outside the mask: unknown
    assert mask_labels(mask, boxes).tolist() == [1, 1, 2, -1, 3, -1]


def test_phantom_ground_truth_matches_a_pixel_count(tmp_path):
    spec = PhantomSpec(width_um=1024, height_um=1024, seed=5)
    truth = phantom_layout(spec).labels  # at 2 µm per pixel
    path = write_label_mask(tmp_path / "p.labels.png", truth, spec.label_mpp, list(CLASS_NAMES))
    mask = read_label_mask(path)
    assert mask.class_names == list(CLASS_NAMES) and mask.mpp == 2.0
    tiles = anchor_table("p", 18, 18)  # 56 µm anchor cells = 28×28 label pixels each
    labels, names = tile_labels(tiles, {"p": path})
    assert names == list(CLASS_NAMES)
    for n, (c, r) in enumerate(tiles.grid):
        block = truth[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28]
        counts = np.bincount(block.ravel(), minlength=len(CLASS_NAMES))
        expected = int(np.argmax(counts))
        assert labels[n] == (-1 if expected == 0 else expected)
    assert (labels >= 0).any() and (labels == -1).any()


def test_csv_labels_by_coords_or_grid_with_natural_class_order(tmp_path):
    tiles = TileTable(*(np.concatenate(parts) for parts in zip(
        [getattr(anchor_table("a", 3, 1), k) for k in ("slide", "grid", "coords", "boxes_um")],
        [getattr(anchor_table("b", 3, 1), k) for k in ("slide", "grid", "coords", "boxes_um")])))
    per_slide = tmp_path / "a.csv"
    per_slide.write_text("x,y,label\n224,0,10\n449,1,2\n999,0,2\n")  # coords within 1 px; the last matches nothing
    shared = tmp_path / "all.tsv"
    shared.write_text("slide_id\tcol\trow\tlabel\nb\t0\t0\ttumour\nb\t2\t0\t2\nc\t0\t0\tx\n")
    labels, names = tile_labels(tiles, {"a": per_slide, "b": None}, csv_path=shared)
    assert names == ["2", "10", "tumour"]
    assert labels.tolist() == [-1, 1, 0, 2, -1, 0]


def test_csv_wins_over_the_mask_and_conflicts_are_errors(tmp_path):
    tiles = anchor_table("a", 2, 1)
    mask_path = write_label_mask(tmp_path / "a.labels.png", np.full((28, 56), 1, np.uint8), 2.0, ["bg", "stroma"])
    table = tmp_path / "t.csv"
    table.write_text("slide_id,col,row,label\na,1,0,tumour\n")
    labels, names = tile_labels(tiles, {"a": mask_path}, csv_path=table)
    assert names == ["bg", "stroma", "tumour"] and labels.tolist() == [1, 2]
    table.write_text("slide_id,col,row,label\na,1,0,tumour\na,1,0,stroma\n")
    with pytest.raises(ConfigError, match="labelled both"):
        tile_labels(tiles, {}, csv_path=table)
    table.write_text("slide_id,label\na,tumour\n")
    with pytest.raises(ConfigError, match="x, y"):
        tile_labels(tiles, {}, csv_path=table)
    with pytest.raises(ConfigError, match="sidecar"):
        read_label_mask(tmp_path / "none.labels.png")
