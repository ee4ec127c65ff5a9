"""MAD Tables 3 and 5 on hand-made tile embeddings and a hand-made label mask."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, davies_bouldin_score, f1_score

from magflow.errors import ConfigError
from magflow.evaluate.probes import fit_linear_probe, fit_paper_linear
from magflow.evaluate.record import MetricSkipped
from magflow.evaluate.mad_eval import MadEvalSettings
from magflow.evaluate.mad_tables import table3, table5
from magflow.evaluate.mad_tiles import MadScale, MadTiles

CLASSES = ["background", "grey", "white", "vessel"]
SPLITS = {"tr1": "train", "tr2": "train", "va": "val", "te": "test"}
# hand-made scales: a 2.5x tile is 8 µm, a 10x tile 2 µm, a 40x tile 0.5 µm; the mask has 0.5 µm pixels,
# so a 2.5x tile paints 16 × 16 pixels, a 10x tile 4 × 4, a 40x tile one pixel
CELL_UM = {4.0: 8.0, 1.0: 2.0, 0.25: 0.5}
MASK_MPP = 0.5


def onehot(classes, scale=5.0):
    return (scale * np.eye(len(CLASSES), dtype=np.float32)[np.asarray(classes)]).astype(np.float32)


def truth_mask() -> np.ndarray:
    """32 × 32 px: left half grey, right half white on top and vessel at the bottom, row 0 background."""
    mask = np.ones((32, 32), np.int64)
    mask[:16, 16:] = 2
    mask[16:, 16:] = 3
    mask[0, :] = 0
    return mask


def slide_te_tiles():
    """(mpp → (grid, class each tile's features encode, tile label)) on the test slide ``te``.

    2.5x: 2 × 2 tiles encoding grey, white / grey, white (the bottom-right tile is wrong: vessel truth);
    10x: 8 × 8 tiles encoding their square's class exactly, tile (7, 7) missing (not covered);
    40x: 32 × 32 tiles encoding their pixel's class except column 31, which encodes grey.
    """
    truth = truth_mask()
    out = {}
    grid = np.array([(c, r) for r in range(2) for c in range(2)])
    out[4.0] = (grid, np.array([1, 2, 1, 2]), np.array([1, 2, 1, 3]))
    grid = np.array([(c, r) for r in range(8) for c in range(8) if (c, r) != (7, 7)])
    cls = np.array([truth[r * 4 + 3, c * 4] for c, r in grid])  # row 3 of the square: never the background row
    out[1.0] = (grid, cls, cls)
    grid = np.array([(c, r) for r in range(32) for c in range(32)])
    label = np.array([truth[r, c] for c, r in grid])
    enc = np.where(grid[:, 0] == 31, 1, label)
    enc = np.where(label == 0, 1, enc)  # a background pixel's tile encodes grey (ignored by the scores)
    out[0.25] = (grid, enc, np.where(label == 0, -1, label))
    return out


def make_tiles(noise: float = 0.0, seed: int = 0) -> MadTiles:
    """Train/val slides with tiles of classes 1-3 at every scale; the test slide as :func:`slide_te_tiles`."""
    rng = np.random.default_rng(seed)
    te = slide_te_tiles()
    scales = {}
    for m, cell in CELL_UM.items():
        slides, grid, labels, feats = [], [], [], []
        for slide in ("tr1", "tr2", "va"):
            cls = np.tile([1, 2, 3], 8)
            slides += [slide] * len(cls)
            grid.append(np.stack([np.arange(len(cls)), np.zeros(len(cls), int)], 1))
            labels.append(cls)
            feats.append(onehot(cls) + rng.normal(0, noise, (len(cls), len(CLASSES))).astype(np.float32))
        g, enc, lab = te[m]
        slides += ["te"] * len(g)
        grid.append(g)
        labels.append(lab)
        feats.append(onehot(enc) + rng.normal(0, noise, (len(g), len(CLASSES))).astype(np.float32))
        scales[m] = MadScale(m, m, cell, np.asarray(slides), np.concatenate(grid).astype(np.int64),
                             np.concatenate(labels).astype(np.int64), np.concatenate(feats))
    return MadTiles(scales, CLASSES, SPLITS)


def write_mask(tmp_path):
    path = tmp_path / "te.labels.png"
    Image.fromarray(truth_mask().astype(np.uint8)).save(path)
    (tmp_path / "te.json").write_text(json.dumps({"label_mpp": MASK_MPP, "classes": CLASSES}))
    return {"te": path}


def miou_by_loop(truth, painted, covered):
    """Mean IoU over the classes in truth or prediction, on labelled covered pixels, counted pixel by pixel."""
    inter, union = {}, {}
    for t, p, c in zip(truth.ravel(), painted.ravel(), covered.ravel()):
        if t == 0 or not c:
            continue
        for k in {int(t), int(p)} - {0}:
            union[k] = union.get(k, 0) + 1
            inter[k] = inter.get(k, 0) + (t == p == k)
    return sum(inter[k] / union[k] for k in union) / len(union)


SETTINGS = MadEvalSettings(probe="logistic", runs=2, knn_k=5)


def test_table5_paints_each_magnification_on_its_own_grid(tmp_path):
    tiles = make_tiles()
    result = table5(tiles, write_mask(tmp_path), SETTINGS, tmp_path / "maps")
    te = slide_te_tiles()
    truth = truth_mask()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "maps" / "te.truth.png")), truth)
    maps = {m: np.asarray(Image.open(tmp_path / "maps" / f"te.{name}.png")).astype(np.int64)
            for m, name in ((4.0, "2.5x"), (1.0, "10x"), (0.25, "40x"))}
    # every pixel of a tile's square carries that tile's class (the probe is exact on these features)
    side = {4.0: 16, 1.0: 4, 0.25: 1}
    for m, (grid, enc, _) in te.items():
        expected = np.zeros((32, 32), np.int64)
        for (c, r), k in zip(grid, enc):
            expected[r * side[m]:(r + 1) * side[m], c * side[m]:(c + 1) * side[m]] = k
        np.testing.assert_array_equal(maps[m], expected)
    assert (maps[4.0][16:, 16:] == 2).all() and (maps[1.0][28:, 28:] == 0).all()
    scores = result["scores"]
    for m, key in ((4.0, "2.5x"), (1.0, "10x"), (0.25, "40x")):
        covered = maps[m] > 0
        assert scores[key]["mean_iou"] == pytest.approx(miou_by_loop(truth, maps[m], covered))
        labelled = truth > 0
        assert scores[key]["coverage"] == pytest.approx((labelled & covered).sum() / labelled.sum())
        assert scores[key]["pixel_accuracy"] == pytest.approx((maps[m] == truth)[labelled & covered].mean())
        assert scores[key]["n_tiles"] == len(te[m][0])
    assert scores["10x"]["mean_iou"] == 1.0 and scores["10x"]["coverage"] < 1.0 and scores["40x"]["coverage"] == 1.0
    assert scores["40x"]["mean_iou"] < 1.0 and scores["2.5x"]["mean_iou"] < scores["40x"]["mean_iou"]
    # consistency % is the 40x mIoU over the 10x mIoU (which differ here)
    assert result["consistency_percent"] == pytest.approx(100 * scores["40x"]["mean_iou"] / scores["10x"]["mean_iou"])
    assert result["probe"]["probe"] == "logistic" and result["train_mpp"] == 1.0 and result["n_train"] == 48
    assert result["slides"] == ["te"] and result["test_slides_without_mask"] == []
    assert json.loads(json.dumps(result, allow_nan=False))["consistency_percent"] == result["consistency_percent"]


def test_table5_with_the_paper_probe_and_bad_masks(tmp_path):
    tiles = make_tiles()
    masks = write_mask(tmp_path)
    result = table5(tiles, masks, replace(SETTINGS, probe="paper-linear", epochs=3), tmp_path / "maps")
    assert result["probe"]["probe"] == "paper-linear" and result["probe"]["epochs_max"] == 3
    with pytest.raises(MetricSkipped, match="none of the 1 test slides has a label mask"):
        table5(tiles, {}, SETTINGS, tmp_path / "maps")
    (tmp_path / "te.json").write_text(json.dumps({"label_mpp": MASK_MPP, "classes": CLASSES[::-1]}))
    with pytest.raises(ConfigError, match="slide te: its label mask"):
        table5(tiles, masks, SETTINGS, tmp_path / "maps")
    with pytest.raises(ConfigError, match="evaluate.mad.probe"):
        table5(tiles, masks, replace(SETTINGS, probe="svm"), tmp_path / "maps")


def knn_by_hand(train_x, train_y, query_x, k):
    """Cosine top-k uniform vote, ties to the smallest label."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    q = query_x / np.linalg.norm(query_x, axis=1, keepdims=True)
    out = []
    for row in q @ a.T:
        votes = np.bincount(train_y[np.argsort(-row, kind="stable")[:k]], minlength=len(CLASSES))
        out.append(int(np.argmax(votes)))
    return np.array(out)


def test_table3_f1_per_class_and_pooled_kmeans_match_sklearn():
    tiles = make_tiles(noise=3.0, seed=1)
    settings = replace(SETTINGS, probe="paper-linear", runs=3, epochs=4, seed=7)
    result = table3(tiles, settings)
    assert set(result["scores"]) == {"2.5x", "10x", "40x"} and result["left_out"] == {}
    for m, key in ((4.0, "2.5x"), (1.0, "10x"), (0.25, "40x")):
        s = tiles.scales[m]
        train, val = s.rows(["tr1", "tr2"], labelled=True), s.rows(["va"], labelled=True)
        test = s.rows(["te"], labelled=True)
        got = result["scores"][key]
        assert (got["n_train"], got["n_val"], got["n_test"]) == (len(train), len(val), len(test))
        classes = [1, 2, 3]
        knn = knn_by_hand(s.features[train], s.labels[train], s.features[test], 5)
        f1 = f1_score(s.labels[test], knn, labels=classes, average=None, zero_division=0)
        for c, v in zip(classes, f1):
            assert got["knn"]["per_class_f1"][CLASSES[c]]["mean"] == pytest.approx(v)
            assert got["knn"]["per_class_f1"][CLASSES[c]]["std"] == 0.0
        assert got["knn"]["runs"] == 1 and got["knn"]["reference"] == "train-split tiles"
        per_run = []
        for seed in (7, 8, 9):
            probe = fit_paper_linear(s.features[train], s.labels[train], s.features[val], s.labels[val], seed, 4)
            per_run.append(f1_score(s.labels[test], probe.predict(s.features[test]), labels=classes, average=None,
                                    zero_division=0))
        per_run = np.array(per_run)
        for i, c in enumerate(classes):
            entry = got["linear"]["per_class_f1"][CLASSES[c]]
            np.testing.assert_allclose(entry["per_run"], per_run[:, i], atol=1e-12)
            assert entry["mean"] == pytest.approx(per_run[:, i].mean())
            assert entry["std"] == pytest.approx(per_run[:, i].std(ddof=1))
        assert got["linear"]["seeds"] == [7, 8, 9] and got["linear"]["probe"] == "paper-linear"
        assert all(f["probe"] == "paper-linear" for f in got["linear"]["fits"])
    # pooled K-Means: the labelled test tiles of all three magnifications together
    kmeans = result["kmeans"]
    parts = [(tiles.scales[m], tiles.scales[m].rows(["te"], labelled=True)) for m in (4.0, 1.0, 0.25)]
    assert kmeans["n"] == sum(len(r) for _, r in parts) == 4 + 63 + (32 * 32 - 32)
    assert kmeans["n_per_mpp"] == {"4": 4, "1": 63, "0.25": 32 * 32 - 32}
    x = np.concatenate([s.features[r] for s, r in parts]).astype(np.float64)
    y = np.concatenate([s.labels[r] for s, r in parts])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clusters = KMeans(n_clusters=3, n_init=10, random_state=7).fit_predict(x)
    assert kmeans["k"] == 3 and kmeans["seed"] == 7
    assert kmeans["ami"] == pytest.approx(adjusted_mutual_info_score(y, clusters), rel=1e-5)
    assert kmeans["davies_bouldin"] == pytest.approx(davies_bouldin_score(x, clusters), rel=1e-5)
    assert json.loads(json.dumps(result, allow_nan=False))["kmeans"]["n"] == kmeans["n"]


def test_table3_logistic_is_one_deterministic_run():
    tiles = make_tiles(noise=3.0, seed=2)
    result = table3(tiles, replace(SETTINGS, runs=5))
    s = tiles.scales[1.0]
    train, val, test = (s.rows(p, labelled=True) for p in (["tr1", "tr2"], ["va"], ["te"]))
    probe = fit_linear_probe(s.features[train], s.labels[train], s.features[val], s.labels[val])
    f1 = f1_score(s.labels[test], probe.predict(s.features[test]), labels=[1, 2, 3], average=None)
    got = result["scores"]["10x"]["linear"]
    assert got["runs"] == 1 and got["probe"] == "logistic" and "nothing" in got["varies"]
    assert [got["per_class_f1"][CLASSES[c]]["mean"] for c in (1, 2, 3)] == pytest.approx(list(f1))


def test_table3_with_fewer_train_tiles_than_k_scores_the_linear_probe_and_leaves_out_knn_only():
    tiles = make_tiles(noise=3.0, seed=1)
    n_train = len(tiles.scales[4.0].rows(["tr1", "tr2"], labelled=True))
    result = table3(tiles, replace(SETTINGS, knn_k=n_train + 1))
    coarse = result["scores"]["2.5x"]
    assert result["left_out"] == {} and coarse["knn"]["status"] == "skipped"
    assert f"fewer than k = {n_train + 1}" in coarse["knn"]["reason"] and "per_class_f1" not in coarse["knn"]
    assert coarse["linear"]["per_class_f1"] == table3(tiles, SETTINGS)["scores"]["2.5x"]["linear"]["per_class_f1"]
    for m, key in ((1.0, "10x"), (0.25, "40x")):  # kNN where a magnification has k train tiles
        enough = len(tiles.scales[m].rows(["tr1", "tr2"], labelled=True)) >= n_train + 1
        assert result["scores"][key]["knn"]["status"] == ("ok" if enough else "skipped")
