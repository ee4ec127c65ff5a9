"""Metric records from an embeddings file: their content against the pure functions and known answers."""

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from eval_fixtures import CELL_UM, GRID, MPPS, SLIDES, make_embeddings, sheet, write_masks
from magflow.embed.output import read_embeddings
from magflow.evaluate import (
    KNN_K,
    RANKME_EPS,
    LabelledTiles,
    centroid_similarity,
    cross_mpp_matrix,
    fit_probe_on_split,
    hierarchy_consistency,
    kmeans_scores,
    label_metrics,
    rankme_by_mpp,
    seeded_splits,
    segmentation_scores,
    tile_label_map,
)
from magflow.evaluate.data import OWN_TILES, SAME_TILES
from magflow.evaluate.evaluate import evaluate_metric
from magflow.evaluate.registry import METRIC_NAMES
from magflow.evaluate.settings import EvalSettings
from magflow.evaluate.splits import SEEDS as DEFAULT_SEEDS

SEEDS = (0, 1)  # two of the five default seeds keep the probes quick


def strict(path):
    """The record, refusing NaN/Infinity (strict JSON)."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    path = make_embeddings(root / "emb.h5")
    splits, groups = sheet()
    masks = write_masks(root / "masks")
    options = dict(sheet_splits=splits, groups=groups, masks=masks, maps_dir=root / "maps", config={"demo": 1},
                   settings={"seeds": SEEDS})
    records = {m: evaluate_metric(m, path, root / f"{m}.json", **options) for m in METRIC_NAMES}
    return root, read_embeddings(path), records, options


def labelled_tiles(emb, mpp):
    rows = np.flatnonzero(emb.valid[mpp] & (emb.label >= 0))
    return rows, emb.features[mpp][rows], emb.label[rows], np.asarray(emb.slide).astype(str)[rows]


def reference_splits(emb):
    _, groups = sheet()
    rows = np.flatnonzero(emb.label >= 0)
    slides = np.asarray(emb.slide).astype(str)[rows]
    return seeded_splits(emb.label[rows], slides, [groups[s] for s in slides], seeds=SEEDS)


def test_every_record_has_the_envelope_and_is_strict_json(setup):
    root, emb, records, _ = setup
    for metric in METRIC_NAMES:
        record = strict(root / f"{metric}.json")
        assert record == records[metric]
        assert record["metric"] == metric and record["status"] == "ok" and record["reason"] == ""
        assert record["model"] == "synthetic" and record["n_tiles"] == len(SLIDES) * GRID * GRID
        assert record["embeddings"]["mpps"] == list(MPPS) and record["embeddings"]["valid"]["2"] == 6 * (64 - 5)
        assert record["provenance"]["git"]["commit"] and record["provenance"]["config"] == {"demo": 1}
        assert "numpy" in record["provenance"]["packages"]


def test_rankme_is_the_same_tiles_profile(setup):
    _, emb, records, _ = setup
    result = records["rankme"]["result"]
    common = np.flatnonzero(np.logical_and.reduce([emb.valid[m] for m in MPPS]))
    expected = rankme_by_mpp({m: emb.features[m][common] for m in MPPS})
    assert result["rows"] == SAME_TILES and result["left_out"] == {}
    for m in MPPS:
        assert result["rankme"][f"{m:g}"] == pytest.approx(expected[m].score, rel=1e-12)
        assert result["n"][f"{m:g}"] == len(common)
    assert records["rankme"]["constants"]["eps"] == RANKME_EPS


def test_probes_match_label_metrics_on_seeded_splits(setup):
    _, emb, records, _ = setup
    record = records["probes"]
    splits = reference_splits(emb)
    assert record["seeds"] == list(SEEDS) and record["result"]["split"]["mode"] == "seeded"
    assert EvalSettings().seeds == DEFAULT_SEEDS == (0, 1, 2, 3, 4)
    assert record["constants"]["knn"]["k"] == KNN_K
    for m in MPPS:
        rows, x, y, slides = labelled_tiles(emb, m)
        expected = label_metrics(x, y, slides, splits)
        got = record["result"]["scores"][f"{m:g}"]
        assert got["n"] == len(rows)
        for probe, summary in (("knn", expected.knn_summary), ("linear", expected.linear_summary)):
            assert got[probe]["balanced_accuracy"]["mean"] == pytest.approx(summary.balanced_accuracy.mean)
            assert got[probe]["balanced_accuracy"]["std"] == pytest.approx(summary.balanced_accuracy.std)
            assert got[probe]["macro_f1"]["mean"] == pytest.approx(summary.macro_f1.mean)
        assert len(got["per_seed"]["linear"]) == len(SEEDS)
        assert set(got["linear"]["per_class_f1"]) == {"tumour", "stroma", "necrosis"}


def test_cross_mpp_matches_the_matrix_and_keeps_100_on_the_diagonal(setup):
    _, emb, records, _ = setup
    result = records["cross_mpp"]["result"]
    tiles = {m: LabelledTiles(*labelled_tiles(emb, m)[1:]) for m in MPPS}
    expected = cross_mpp_matrix(tiles, reference_splits(emb))
    mean, _ = expected.mean_std(expected.balanced_accuracy)
    np.testing.assert_allclose(result["balanced_accuracy"]["mean"], mean)
    kept = np.array(result["balanced_accuracy"]["retained_percent"]["mean"], float)
    np.testing.assert_allclose(np.diag(kept), 100.0)
    np.testing.assert_allclose(kept, expected.mean_std(expected.retained())[0])


def test_clustering_and_centroids_match_the_pure_functions(setup):
    _, emb, records, _ = setup
    for m in MPPS:
        _, x, y, _ = labelled_tiles(emb, m)
        expected = kmeans_scores(x, y)
        got = records["clustering"]["result"]["scores"][f"{m:g}"]
        assert got["ami"] == pytest.approx(expected.ami) and got["davies_bouldin"] == pytest.approx(expected.davies_bouldin)
    common = np.flatnonzero(np.logical_and.reduce([emb.valid[m] for m in MPPS]))
    expected = centroid_similarity({m: emb.features[m][common] for m in MPPS})
    np.testing.assert_allclose(records["centroids"]["result"]["matrix"], expected.matrix)


def test_consistency_pairs_parents_and_children_by_grid_arithmetic(setup):
    _, emb, records, _ = setup
    result = records["consistency"]["result"]
    slides = np.asarray(emb.slide).astype(str)
    pooled = {"pos": [0.0, 0], "neg_same": [0.0, 0], "neg_diff": [0.0, 0]}
    for slide in SLIDES:
        rows = np.flatnonzero(slides == slide)
        grid = emb.grid[rows]
        cells = grid // 4
        # representative: the first anchor (row order) among the four nearest the parent centre
        central = np.all((grid % 4 == 1) | (grid % 4 == 2), axis=1)
        parents = [rows[np.flatnonzero(central & np.all(cells == cell, axis=1))[0]] for cell in [(0, 0), (1, 0),
                                                                                                  (0, 1), (1, 1)]]
        owner = np.array([[(0, 0), (1, 0), (0, 1), (1, 1)].index(tuple(c)) for c in cells])
        expected = hierarchy_consistency(emb.features[1.0][parents], emb.features[0.25][rows], owner,
                                         emb.label[parents])
        got = result["per_slide"][slide]
        assert got["s_pos"] == pytest.approx(expected.s_pos) and got["delta_sem"] == pytest.approx(expected.delta_sem)
        for name in pooled:
            pooled[name][0] += getattr(expected, f"s_{name}") * getattr(expected, f"n_{name}")
            pooled[name][1] += getattr(expected, f"n_{name}")
    for name, (total, n) in pooled.items():
        assert result["pooled"][f"s_{name}"] == pytest.approx(total / n)
    assert result["n_parents"] == 4 * len(SLIDES) and result["n_children"] == 64 * len(SLIDES)
    assert result["offset_um"]["max"] == pytest.approx(np.sqrt(2) * CELL_UM / 2)
    assert result["children_outside_view"] == 0  # every anchor is kept: central representatives see all 16


def test_segmentation_paints_the_probe_and_scores_it(setup):
    root, emb, records, options = setup
    result = records["segmentation"]["result"]
    splits, _ = sheet()
    split = reference_splits(emb)[0]
    assert result["train_mpp"] == 1.0 and result["test_slides"] == sorted(split.test)
    rows, x, y, slides = labelled_tiles(emb, 1.0)
    probe = fit_probe_on_split(x, y, split.rows(slides))
    slide = result["test_slides"][0]
    truth = np.asarray(Image.open(options["masks"][slide]))
    for m in MPPS:
        mine = np.flatnonzero((np.asarray(emb.slide).astype(str) == slide) & emb.valid[m])
        painted = tile_label_map(emb.grid[mine], probe.predict(emb.features[m][mine]), CELL_UM, truth.shape, 4.0)
        region = tile_label_map(emb.grid[mine], np.ones(len(mine)), CELL_UM, truth.shape, 4.0) > 0
        expected = segmentation_scores(truth, painted, region)
        got = result["per_slide"][slide]["mpps"][f"{m:g}"]
        assert got["mean_iou"] == pytest.approx(expected.mean_iou) and got["n_pixels"] == expected.n_pixels
        saved = np.asarray(Image.open(root / "maps" / result["per_slide"][slide]["maps"][f"{m:g}"]))
        np.testing.assert_array_equal(saved, painted)
    np.testing.assert_array_equal(np.asarray(Image.open(root / "maps" / f"{slide}.truth.png")), truth)


def test_separable_embeddings_segment_perfectly(tmp_path):
    path = make_embeddings(tmp_path / "clean.h5", noise=0.01)
    splits, groups = sheet()
    record = evaluate_metric("segmentation", path, tmp_path / "seg.json", sheet_splits=splits, groups=groups,
                             masks=write_masks(tmp_path / "masks"), maps_dir=tmp_path / "maps")
    for scores in record["result"]["mean_over_slides"].values():
        assert scores["mean_iou"] == 1.0 and scores["mean_dice"] == 1.0 and scores["pixel_accuracy"] == 1.0


def test_missing_labels_are_a_recorded_skip_not_a_crash(tmp_path):
    path = make_embeddings(tmp_path / "nolabels.h5", labelled=False)
    splits, groups = sheet()
    records = {m: evaluate_metric(m, path, tmp_path / f"{m}.json", sheet_splits=splits, groups=groups,
                                  maps_dir=tmp_path / "maps") for m in METRIC_NAMES}
    for metric in ("probes", "cross_mpp", "clustering", "segmentation"):
        assert records[metric]["status"] == "skipped" and "no tile labels" in records[metric]["reason"]
        assert records[metric]["result"] == {} and strict(tmp_path / f"{metric}.json")["status"] == "skipped"
    assert records["rankme"]["status"] == "ok" and records["centroids"]["status"] == "ok"
    hier = records["consistency"]["result"]
    assert records["consistency"]["status"] == "ok" and hier["pooled"]["delta_sem"] is None
    assert hier["pooled"]["delta_hier"] is not None and (tmp_path / "maps").is_dir()


def test_split_modes(tmp_path):
    path = make_embeddings(tmp_path / "emb.h5")
    splits, _ = sheet()
    separate = {slide: slide for slide in SLIDES}
    few = {"test_fraction": 0.1, "val_fraction": 0.1}  # ten folds: six slides are too few
    seeded = evaluate_metric("probes", path, tmp_path / "a.json", sheet_splits=splits, groups=separate,
                             settings={"splits": "seeded", **few})
    assert seeded["status"] == "skipped" and "seeded slide splits are impossible" in seeded["reason"]
    auto = evaluate_metric("probes", path, tmp_path / "b.json", sheet_splits=splits, groups=separate, settings=few)
    split = auto["result"]["split"]
    assert auto["status"] == "ok" and split["mode"] == "sheet" and "seeded splits impossible" in split["note"]
    assert auto["seeds"] == [-1] and split["splits"][0]["test"] == ["s5"] and split["splits"][0]["val"] == ["s4"]
    no_val = evaluate_metric("probes", path, tmp_path / "c.json", settings={"splits": "sheet"},
                             sheet_splits={s: "train" if s != "s5" else "test" for s in SLIDES})
    assert no_val["status"] == "skipped" and "in val" in no_val["reason"]


def test_a_missing_mpp_or_an_impossible_probe_is_recorded(tmp_path):
    path = make_embeddings(tmp_path / "emb.h5")
    splits, groups = sheet()
    record = evaluate_metric("consistency", path, tmp_path / "c.json", settings={"hierarchy": {"coarse_mpp": 0.6}})
    assert record["status"] == "skipped" and "whole multiple" in record["reason"]
    record = evaluate_metric("segmentation", path, tmp_path / "s.json", sheet_splits=splits, groups=groups,
                             settings={"segmentation": {"train_mpp": 0.375}}, maps_dir=tmp_path / "m")
    assert record["status"] == "skipped" and "no 0.375 mpp views" in record["reason"]
    record = evaluate_metric("segmentation", path, tmp_path / "s.json", sheet_splits=splits, groups=groups)
    assert record["status"] == "skipped" and "has a label mask" in record["reason"]


def test_rankme_uses_each_mpps_own_tiles_when_too_few_are_shared(tmp_path):
    path = make_embeddings(tmp_path / "emb.h5")
    emb = read_embeddings(path)
    with h5py.File(path, "r+") as h5:  # 0.5 and 2.0 views on disjoint halves of the tiles
        n = len(emb.tile_id)
        h5["mpp_0.500/valid"][...] = np.arange(n) < n // 2
        h5["mpp_2.000/valid"][...] = np.arange(n) >= n // 2
    result = evaluate_metric("rankme", path, tmp_path / "r.json")["result"]
    assert result["rows"] == OWN_TILES and set(result["n"].values()) == {n // 2}


def test_children_beyond_an_off_centre_parent_view_are_left_out(tmp_path):
    path = make_embeddings(tmp_path / "emb.h5")
    emb = read_embeddings(path)
    with h5py.File(path, "r+") as h5:  # 1.0 mpp views only for each parent cell's top-left anchor
        h5["mpp_1.000/valid"][...] = np.all(emb.grid % 4 == 0, axis=1)
    result = evaluate_metric("consistency", path, tmp_path / "c.json")["result"]
    per_parent_kept = 3 * 3  # anchors within 2 cells of the corner anchor along each axis
    assert result["n_children"] == 4 * len(SLIDES) * per_parent_kept
    assert result["children_outside_view"] == 4 * len(SLIDES) * (16 - per_parent_kept)
    assert result["offset_um"]["max"] == pytest.approx(np.sqrt(2) * 1.5 * CELL_UM)
