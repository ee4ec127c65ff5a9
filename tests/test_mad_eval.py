"""The mad_embed and mad_eval steps on real tiny stores: tiles on their own grids, labels, splits, the record,
Fig 3, the tables and the command line."""

import json

import numpy as np
import pytest
import torch

from embed_fixtures import export_tiny_vit, write_label_mask
from mad_fixtures import write_mad_store
from magflow.cli import main
from magflow.embed.encoder import load_encoder
from magflow.errors import ConfigError
from magflow.aggregate.tile_embed import centre_views
from magflow.evaluate.mad_embed import embed_mad_tiles
from magflow.evaluate.mad_eval import MadEvalSettings, check_mad_scales, evaluate_mad
from magflow.evaluate.mad_tiles import read_mad_tiles
from magflow.preprocess.store import TileStore
from magflow.report.report_index import _mad as index_mad_section
from magflow.report.mad_report import write_mad_tables

SPLITS = {"tr": "train", "va": "val", "te": "test"}
NAMES = ["background", "left", "right"]
LABEL_MPP = 8.0  # the slides are 512 µm: 64 × 64 mask pixels


def truth() -> np.ndarray:
    mask = np.ones((64, 64), np.uint8)
    mask[:, 32:] = 2
    mask[:, 28:32] = 0  # a background strip: the 1.0 mpp tiles over it stay unlabelled
    return mask


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("mad")
    stores = [write_mad_store(root, slide, seed=i) for i, slide in enumerate(SPLITS)]
    masks = {slide: write_label_mask(root / f"{slide}.labels.png", truth(), LABEL_MPP, NAMES) for slide in SPLITS}
    model = export_tiny_vit(root / "model")
    tiles = embed_mad_tiles(stores, root / "tiles.h5", model, splits=SPLITS, labels=masks, name="tiny",
                            batch_size=50, progress=False)
    return root, stores, masks, model, tiles


def test_every_tile_of_every_scale_is_embedded_at_its_own_scale(project):
    root, stores, _, model, tiles = project
    again = read_mad_tiles(root / "tiles.h5")
    assert again.mpps == [4.0, 1.0, 0.25] and again.splits == SPLITS and again.class_names == NAMES
    encoder = load_encoder(model)
    with TileStore(stores[2]) as store:
        for mpp in again.mpps:
            rows = again.scales[mpp].rows(["te"])
            assert len(rows) == len(store.group(mpp)["grid"])  # every kept tile, store order
            assert np.array_equal(again.scales[mpp].grid[rows], store.group(mpp)["grid"][...])
            with torch.inference_mode():
                direct = encoder(centre_views(store.images(mpp)[:3], 32)).numpy()
            assert np.allclose(again.scales[mpp].features[rows[:3]], direct, atol=1e-5)


def test_a_tile_label_is_the_majority_class_under_its_square(project):
    tiles = project[-1]
    mask = truth()
    for mpp in tiles.mpps:
        scale = tiles.scale(mpp)
        side = int(round(scale.cell_um / LABEL_MPP))
        for row in range(0, len(scale.slides), 37):
            if mpp == 0.25:  # an 8 µm tile is one mask pixel
                c, r = scale.grid[row]
                votes = np.bincount([mask[r, c]], minlength=3)
            else:
                c, r = scale.grid[row] * side
                votes = np.bincount(mask[r:r + side, c:c + side].ravel(), minlength=3)
            expected = int(np.argmax(votes))
            assert scale.labels[row] == (-1 if expected == 0 else expected), (mpp, row)
    assert (tiles.scale(1.0).labels == -1).any() and set(np.unique(tiles.scale(1.0).labels)) <= {-1, 1, 2}


def test_a_slide_without_a_split_is_refused_before_embedding(project):
    root, stores, masks, model, _ = project
    with pytest.raises(ConfigError, match="split"):
        embed_mad_tiles(stores, root / "never.h5", model, splits={"tr": "train", "va": "val"}, labels=masks)
    assert not (root / "never.h5").exists()


def test_the_record_holds_tables_3_4_5_and_fig_3_is_drawn(project):
    root, _, masks, _, _ = project
    settings = MadEvalSettings(bootstrap=50, runs=2, knn_k=3, epochs=3, pca_parents=2)
    record = evaluate_mad(root / "tiles.h5", root / "mad.json", masks=masks, settings=settings,
                          maps_dir=root / "maps", pca=root / "pca.png")
    assert record["protocol"] == "mad-paper" and record["settings"]["bootstrap"] == 50
    assert json.loads((root / "mad.json").read_text())["hierarchy"] == json.loads(json.dumps(record["hierarchy"]))
    pairs = record["hierarchy"]["pairs"]
    assert list(pairs) == ["2.5x>10x", "10x>40x"]
    for pair in pairs.values():
        assert pair["counts"]["test_slides"] == 1 and pair["counts"]["incomplete"] >= 1  # the fixture's holes
        if pair["status"] == "ok":
            assert pair["delta_hier"]["mean"] == pytest.approx(pair["s_pos"]["mean"] - pair["s_neg_same"]["mean"])
    assert pairs["10x>40x"]["status"] == "ok" and pairs["10x>40x"]["counts"]["scored"] > 0
    assert record["table3"]["status"] == "ok" and record["table5"]["status"] == "ok"
    assert record["tiles"]["missing_scales"] == {s: [] for s in SPLITS}
    assert (root / "pca.png").stat().st_size > 5000
    write_mad_tables({"tiny": root / "mad.json", "tiny~init": root / "mad.json"}, root / "t4.tsv", root / "t.html",
                     root / "t3.tsv", root / "t5.tsv")
    table4 = (root / "t4.tsv").read_text().splitlines()
    assert len(table4) == 1 + 2 * 2 and "Δhier [95% CI]" in table4[0]
    assert "tiny~init (control: tiny at initialisation)" in table4[3]
    page = (root / "t.html").read_text()
    assert all(f"Table {n}" in page for n in (3, 4, 5))
    section = "".join(index_mad_section(root / "t4.tsv"))  # what results/report/index.html shows
    assert "href='mad_tables.html'" in section and "tiny~init (control: tiny at initialisation)" in section


def test_a_section_the_cohort_cannot_give_is_skipped_with_its_reason(project, tmp_path):
    root, stores, masks, model, _ = project
    unlabelled = embed_mad_tiles(stores[:1] + stores[2:], tmp_path / "tiles.h5", model,
                                 splits={"tr": "train", "te": "test"}, labels={}, progress=False)
    assert unlabelled.class_names == [] and all((s.labels == -1).all() for s in unlabelled.scales.values())
    record = evaluate_mad(tmp_path / "tiles.h5", tmp_path / "mad.json", masks={}, settings=MadEvalSettings(bootstrap=5),
                          maps_dir=tmp_path / "maps")
    assert record["table3"]["status"] == "skipped" and record["table3"]["reason"]
    assert all(p["status"] == "skipped" and "unlabelled" in p["reason"] for p in record["hierarchy"]["pairs"].values())
    # a bad setting is not a cohort that cannot give a table: the job fails, naming the key, and writes nothing
    with pytest.raises(ConfigError, match="min_children"):
        evaluate_mad(tmp_path / "tiles.h5", tmp_path / "bad.json", masks={}, maps_dir=tmp_path / "maps",
                     settings=MadEvalSettings(bootstrap=5, min_children=17))
    assert not (tmp_path / "bad.json").exists()


def test_settings_and_scales_are_checked():
    assert MadEvalSettings.from_config({"bootstrap": 10}).bootstrap == 10
    with pytest.raises(ConfigError, match="unknown"):
        MadEvalSettings.from_config({"bootstraps": 10})
    with pytest.raises(ConfigError, match="probe"):
        MadEvalSettings.from_config({"probe": "svm"})
    with pytest.raises(ConfigError, match=">= 1"):
        MadEvalSettings.from_config({"negatives_per_parent": 0})
    check_mad_scales([0.25, 1.0, 4.0], "tilesets.mad.scales")
    with pytest.raises(ConfigError, match="nest"):
        check_mad_scales([4.0, 1.5], "tilesets.mad.scales")
    with pytest.raises(ConfigError, match="two scales"):
        check_mad_scales([1.0], "tilesets.mad.scales")


def test_command_line_runs_the_same_steps(project, tmp_path, capsys):
    root, stores, masks, model, _ = project
    sheet = tmp_path / "slides.tsv"
    sheet.write_text("slide_id\tpath\tsplit\n" + "".join(f"{s}\t{s}.svs\t{v}\n" for s, v in SPLITS.items()))
    pairs = [f"{s}={p}" for s, p in masks.items()]
    assert main(["mad-embed", *map(str, stores), "--out", str(tmp_path / "tiles.h5"), "--model-dir", str(model),
                 "--sheet", str(sheet), "--masks", *pairs]) == 0
    assert main(["mad-eval", str(tmp_path / "tiles.h5"), "--out", str(tmp_path / "mad.json"), "--masks", *pairs,
                 "--settings", json.dumps({"bootstrap": 20, "runs": 1, "knn_k": 3, "epochs": 2})]) == 0
    assert main(["mad-report", f"tiny={tmp_path / 'mad.json'}", "--out-html", str(tmp_path / "t.html"),
                 "--out-tsv", str(tmp_path / "t.tsv")]) == 0
    out = capsys.readouterr().out
    assert "hierarchy: ok" in out and "table3: ok" in out
    assert (tmp_path / "segmentation").is_dir() and (tmp_path / "t.tsv").is_file()


def test_embed_mean_patch_reaches_the_mad_tiles(project, tmp_path):
    """embed.mean_patch: every MAD tile's feature is [CLS, mean patch token], as the evaluation embeddings."""
    root, stores, masks, model, tiles = project
    both = embed_mad_tiles(stores, tmp_path / "mean.h5", model, splits=SPLITS, labels=masks, name="tiny",
                           batch_size=50, mean_patch=True, progress=False)
    for plain, doubled in zip(tiles.scales.values(), both.scales.values()):
        width = plain.features.shape[1]
        assert doubled.features.shape[1] == 2 * width
        np.testing.assert_allclose(doubled.features[:, :width], plain.features, rtol=1e-5, atol=1e-5)
