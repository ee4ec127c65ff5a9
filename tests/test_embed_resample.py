"""The view protocol's ``finest`` path: every view at every mpp resized from the finest stored scale by one filter."""

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from embed_fixtures import export_tiny_vit, render, smooth_field, write_analytic_store
from magflow.embed import embed_tileset
from magflow.embed.protocol import FINEST, PROFILE_MPPS, VIEW_FILTER, cut_window, plan_views, read_anchors
from magflow.embed.embed import preview_views
from magflow.evaluate.evaluate import evaluate_metric
from magflow.preprocess.store import TileImages, TileStore

C = 32  # cell px: 8 µm at 0.25 mpp
WIDE = round(C * max(PROFILE_MPPS) / 0.25)  # 256 px: the 2.0 mpp window at 0.25 mpp


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory):
    """Every scale stored, each with patches wide enough for the 2.0 mpp window at 0.25 mpp."""
    return write_analytic_store(tmp_path_factory.mktemp("wide") / "s.h5", smooth_field, size_um=64, source_px=WIDE)


def plans_of(path, resample=FINEST):
    with TileStore(path) as store:
        anchors = read_anchors(store, 0.25)
        return anchors, {t: plan_views(store, anchors, t, resample) for t in PROFILE_MPPS}


def test_every_mpp_is_a_window_of_the_finest_scale_centred_on_the_tile(wide_store):
    anchors, plans = plans_of(wide_store)
    for t, plan in plans.items():
        assert plan.valid.all() and plan.source_mpp == 0.25 and plan.resample == FINEST, (t, plan.reason)
        assert plan.crop_px == round(C * t / 0.25) and plan.view_mpp == pytest.approx(t)
        assert plan.filter == (VIEW_FILTER if t > 0.25 else "none: the C px window is the view")
        tiles, views = preview_views(wide_store, plan)
        for tile, view in list(zip(tiles, views))[::9]:
            centre = (anchors.grid[tile] + 0.5) * anchors.cell_um
            expected = render(smooth_field, centre[0] - C / 2 * t, centre[1] - C / 2 * t, C, t).astype(float)
            assert np.abs(view - expected).mean() < 2.5, (t, tile)


def test_the_view_at_half_mpp_equals_an_independent_antialiased_downsample(wide_store):
    _, plans = plans_of(wide_store)
    for t in (0.5, 0.75, 2.0):
        plan = plans[t]
        tiles, views = preview_views(wide_store, plan)
        with h5py.File(wide_store, "r") as h5:
            images = TileImages(h5[plan.group])
            for tile, view in list(zip(tiles, views))[::5]:
                window = cut_window(images[int(plan.rows[tile])], plan.offsets[tile], plan.crop_px)
                assert window.shape == (plan.crop_px, plan.crop_px, 3)
                # PIL's bilinear downsample is one antialiased triangle-filter pass, as torch's antialias=True
                pil = np.asarray(Image.fromarray(window).resize((C, C), Image.Resampling.BILINEAR, reducing_gap=None))
                difference = np.abs(view.astype(int) - pil.astype(int))
                assert difference.max() <= 1 and difference.mean() < 0.5, (t, tile)  # PIL rounds in between


def test_a_store_too_small_for_the_finest_path_skips_with_the_reason(tmp_path):
    path = write_analytic_store(tmp_path / "s72.h5", smooth_field, size_um=64, source_px=72)
    _, plans = plans_of(path)
    assert all(plans[t].valid.all() for t in (0.25, 0.375, 0.5))
    for t in (0.75, 1.0, 1.5, 2.0):
        assert not plans[t].valid.any() and "does not fit in its 72 px source patches" in plans[t].reason


def test_an_untrained_network_on_phantom_tiles_sees_standard_and_intermediate_mpps_through_one_path(tmp_path):
    """A phantom slide, extracted as the ``eval`` tile set (its finest scale, wide patches) and as a multi-scale
    store; an untrained ViT embeds both: only ``nearest_scale`` treats 0.5 and 0.75 mpp differently."""
    from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles
    from magflow.phantom.slide import PhantomSpec, write_phantom
    from test_tiles import write_full_mask

    slide = tmp_path / "p.tif"
    write_phantom(PhantomSpec(width_um=256, height_um=256, seed=1), slide, tmp_path / "p.png", tmp_path / "p.json")
    mask = write_full_mask(tmp_path / "m.h5", 256, 256)
    finest = TileSetParams("eval", [0.25], cell_px=C, source_px=WIDE, min_tissue=0.5, max_tiles_per_scale=12, seed=1)
    multi = TileSetParams("multi", [0.25, 0.5, 1.0, 2.0], cell_px=C, source_px=72, min_tissue=0.5,
                          max_tiles_per_scale=12, seed=1, nested=True)
    stores = {}
    for params in (finest, multi):
        stores[params.name] = tmp_path / params.name / "p.h5"
        extract_tiles(slide, "p", mask, stores[params.name], params, progress=False)
    model = export_tiny_vit(tmp_path / "untrained")
    records = {}
    for name, resample in (("eval", "finest"), ("multi", "nearest_scale")):
        out = tmp_path / f"{name}.h5"
        embed_tileset([stores[name]], out, model, resample=resample, batch_size=16, device="cpu", progress=False)
        with h5py.File(out, "r") as h5:
            assert h5.attrs["resample"] == resample and h5.attrs["view_filter"] == VIEW_FILTER
            records[name] = {t: {"source": float(h5[f"mpp_{t:.3f}"].attrs["source_mpp"]),
                                 "window": json.loads(h5[f"mpp_{t:.3f}"].attrs["crop_px"])["p"],
                                 "filter": json.loads(h5[f"mpp_{t:.3f}"].attrs["filter"])["p"],
                                 "valid": int(h5[f"mpp_{t:.3f}"].attrs["valid"])} for t in PROFILE_MPPS}
    same = records["eval"]
    assert all(same[t]["valid"] == 12 for t in PROFILE_MPPS)
    for t in PROFILE_MPPS[1:]:  # every view resized from 0.25 mpp with the same filter, standard or not
        assert same[t] == {"source": 0.25, "window": round(C * t / 0.25), "filter": VIEW_FILTER, "valid": 12}, t
    old = records["multi"]  # the sawtooth's cause: 0.5 is a raw crop of its own scale, 0.75 is resized
    assert old[0.5]["source"] == 0.5 and old[0.5]["filter"].startswith("none")
    assert old[0.75]["source"] == 0.5 and old[0.75]["filter"] == VIEW_FILTER
    record = evaluate_metric("rankme", tmp_path / "eval.h5", tmp_path / "rankme.json")
    assert record["embeddings"]["resample"] == "finest" and record["embeddings"]["view_filter"] == VIEW_FILTER
