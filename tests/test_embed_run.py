"""Embedding a tile set end to end: the file layout, same tiles at every mpp, labels, real extraction."""

import json

import h5py
import numpy as np
import pytest
import torch

from embed_fixtures import export_tiny_vit, smooth_field, write_analytic_store, write_label_mask
from magflow.embed import PROFILE_MPPS, embed_tileset, load_encoder, plan_views, read_anchors, read_embeddings
from magflow.embed.embed import preview_views
from magflow.errors import ConfigError
from magflow.preprocess.store import TileStore

GROUPS = [f"mpp_{t:.3f}" for t in PROFILE_MPPS]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_tiny_vit(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("embed")
    a = write_analytic_store(root / "a.h5", smooth_field, slide_id="a", size_um=64)
    b = write_analytic_store(root / "b.h5", smooth_field, slide_id="b", size_um=64, drop={0.5: [(1, 1)]})
    c = write_analytic_store(root / "c.h5", smooth_field, slide_id="c", size_um=64, scales=(0.5, 1.0, 2.0))
    labels = np.zeros((32, 32), np.uint8)
    labels[:, 16:] = 2  # slide a: left half glass, right half class 2 (2 µm per label pixel)
    mask = write_label_mask(root / "a.labels.png", labels, 2.0, ["glass", "stroma", "tumour"])
    table = root / "b.csv"
    table.write_text("col,row,label\n0,0,necrosis\n7,7,tumour\n")
    out = root / "embeddings" / "tiny" / "eval.h5"
    summary = embed_tileset([a, b, c], out, model_dir, mean_patch=True, labels={"a": mask, "b": table},
                            batch_size=50, device="cpu", progress=False, config={"embed": {"tileset": "eval"}},
                            resample="nearest_scale")
    return out, summary, (a, b, c)


def test_the_file_has_the_documented_layout(embedded):
    out, summary, _ = embedded
    with h5py.File(out, "r") as h5:
        assert sorted(h5) == sorted(["tile_id", "slide", "grid", "coords", "label", *GROUPS])
        n = len(h5["tile_id"])
        assert n == 2 * 64 and summary["tiles"] == n  # slide c has no 0.25 mpp scale: no tiles
        assert h5["tile_id"].dtype == np.int64 and h5["tile_id"][...].tolist() == list(range(n))
        assert h5["slide"].dtype == h5py.string_dtype("utf-8") and h5["slide"].asstr()[0] == "a"
        for key in ("grid", "coords"):
            assert h5[key].dtype == np.int64 and h5[key].shape == (n, 2)
        assert h5["label"].dtype == np.int64
        for name in GROUPS:
            group = h5[name]
            assert group["features"].dtype == np.float32 and group["features"].shape == (n, 64)
            assert group["valid"].dtype == bool and group["valid"].shape == (n,)
            assert group.attrs["valid"] + group.attrs["skipped"] == n
        attrs = h5.attrs
        assert attrs["model"] == "tiny" and attrs["anchor_mpp"] == 0.25 and attrs["tileset"] == "eval"
        assert json.loads(attrs["model_card"])["architecture"]["embed_dim"] == 32
        assert json.loads(attrs["mpps"]) == list(PROFILE_MPPS)
        assert json.loads(attrs["source_mpp"]) == {"0.25": 0.25, "0.375": 0.25, "0.5": 0.5, "0.75": 0.5, "1": 1.0,
                                                   "1.5": 1.0, "2": 2.0}
        assert json.loads(attrs["counts"])["0.5"] == {"valid": n - 4, "skipped": 4}
        assert attrs["precision"] == "fp32" and attrs["features"] == "cls+mean_patch" and attrs["feature_dim"] == 64
        assert attrs["resample"] == "nearest_scale" and "v1" in attrs["protocol"]
        assert h5["mpp_0.500"].attrs["resample"] == "nearest_scale"
        assert json.loads(h5["mpp_0.500"].attrs["filter"])["a"].startswith("none")
        assert json.loads(h5["mpp_0.750"].attrs["filter"])["a"] == attrs["view_filter"]
        assert attrs["complete"] == n - 4
        slides = json.loads(attrs["slides"])
        assert slides["c"]["anchors"] == 0 and "no 0.25 mpp (anchor) scale" in slides["c"]["reason"]
        provenance = json.loads(attrs["provenance"])
        assert provenance["precision"] == "fp32" and provenance["config"] == {"embed": {"tileset": "eval"}}
        assert json.loads(attrs["class_names"]) == ["glass", "stroma", "tumour", "necrosis"]


def test_same_tiles_at_every_mpp_with_a_validity_mask(embedded):
    out, _, _ = embedded
    emb = read_embeddings(out)
    assert emb.mpps == list(PROFILE_MPPS)
    b = emb.slide == "b"
    hole = b & np.isin(emb.grid[:, 0], [2, 3]) & np.isin(emb.grid[:, 1], [2, 3])
    for t in emb.mpps:
        expected = ~hole if t in (0.5, 0.75) else np.ones(len(hole), bool)
        assert (emb.valid[t] == expected).all(), t
        assert not emb.features[t][~emb.valid[t]].any() and emb.features[t][emb.valid[t]].any(axis=1).all()
        assert np.isnan(emb.mpp_achieved[t][~emb.valid[t]]).all()
        assert np.allclose(emb.mpp_achieved[t][emb.valid[t]], t)
    assert (emb.complete() == ~hole).all()
    # the same tile differs across mpps: each mpp sees it at its own magnification
    assert not np.allclose(emb.features[0.25], emb.features[2.0])


def test_features_are_the_encoder_applied_to_the_planned_views(embedded, model_dir):
    out, _, (a, _, _) = embedded
    emb = read_embeddings(out)
    encoder = load_encoder(model_dir, mean_patch=True)
    with TileStore(a) as store:
        anchors = read_anchors(store, 0.25)
        plans = {t: plan_views(store, anchors, t, "nearest_scale") for t in (1.0, 0.75)}
    for t, plan in plans.items():
        tiles, views = preview_views(a, plan)
        with torch.no_grad():
            expected = encoder(torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255).numpy()
        # at 1.0 the view is the stored pixels; at 0.75 the preview is rounded to uint8 after the resize
        assert np.allclose(emb.features[t][tiles], expected, atol=1e-4 if t == 1.0 else 0.02), t


def test_stores_without_the_anchor_scale_are_refused(embedded, model_dir, tmp_path):
    _, _, (_, _, c) = embedded
    with pytest.raises(ConfigError, match="no store has the anchor scale 0.25"):
        embed_tileset([c], tmp_path / "x.h5", model_dir, anchor_mpp=0.25, device="cpu", progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_labels_from_the_mask_and_the_csv(embedded):
    out, _, _ = embedded
    emb = read_embeddings(out)
    a, b = emb.slide == "a", emb.slide == "b"
    # slide a: anchor cells are 8 µm; columns 0..3 cover x < 32 µm (glass), columns 4..7 class 2
    assert (emb.label[a & (emb.grid[:, 0] < 4)] == -1).all() and (emb.label[a & (emb.grid[:, 0] >= 4)] == 2).all()
    labelled = {tuple(g): int(lab) for g, lab in zip(emb.grid[b].tolist(), emb.label[b]) if lab >= 0}
    assert labelled == {(0, 0): 3, (7, 7): 2}


def test_a_store_from_real_extraction_embeds_at_every_mpp(tmp_path, model_dir):
    from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles  # needs OpenSlide
    from test_tiles import smooth_texture, write_full_mask
    from wsi_factory import write_wsi

    slide = write_wsi(tmp_path / "s.svs", smooth_texture(512), mpp=0.25, levels=4)
    mask = write_full_mask(tmp_path / "m.h5", 128, 128)
    params = TileSetParams("eval", [0.25, 0.5, 1.0, 2.0], cell_px=32, source_px=72, min_tissue=0.5)
    store = tmp_path / "eval" / "s.h5"
    extract_tiles(slide, "s", mask, store, params, progress=False)
    out = tmp_path / "out.h5"
    summary = embed_tileset([store], out, model_dir, workers=1, batch_size=64, progress=False, resample="nearest_scale")
    emb = read_embeddings(out)
    assert summary["tiles"] == 16 * 16 and summary["complete"] == 256 and summary["views"] == 7 * 256
    assert emb.attrs["anchor_mpp"] == 0.25 and (emb.label == -1).all() and emb.class_names == []
    with TileStore(store) as tiles:
        assert (emb.coords == tiles.group(0.25)["coords"][...]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_embeds_in_bf16_close_to_float32(embedded, model_dir, tmp_path):
    out, _, stores = embedded
    summary = embed_tileset(stores, tmp_path / "gpu.h5", model_dir, mean_patch=True, batch_size=50, progress=False,
                            resample="nearest_scale")
    cpu, gpu = read_embeddings(out), read_embeddings(tmp_path / "gpu.h5")
    assert summary["precision"] == "bf16-autocast" and gpu.attrs["device"].startswith("cuda")
    for t in cpu.mpps:
        a, b = cpu.features[t][cpu.valid[t]], gpu.features[t][gpu.valid[t]]
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() > 0.99, t
