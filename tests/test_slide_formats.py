"""Slides the tissue step was not made for, and slides that are not whole-slide images.

Dark-background scans (fluorescence, dark-field) and scans whose "tissue" covers nearly everything are
refused by the mask step unless the sheet accepts them; plain images (PNG, JPEG, strip TIFF) are read
as one-level slides with the sheet's mpp; damaged files say so.
"""

import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from magflow.errors import ConfigError, MissingMppError, SlideError
from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles
from magflow.preprocess.mask_store import mask_summary, read_mask
from magflow.preprocess.store import TileStore
from magflow.preprocess.tissue import TissueParams
from magflow.preprocess.tissue_mask import make_tissue_mask
from magflow.report.slide_qc_table import write_slide_table
from magflow.sheet import read_sheet
from magflow.slides.reader import Slide
from wsi_factory import write_wsi

GLASS = (242, 240, 244)
TILES = TileSetParams("t", [0.5, 1.0], cell_px=112, source_px=112, min_tissue=0.5)


def luma_median(rgb: np.ndarray) -> float:
    return float(np.median(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]))


def fluorescence(size: int, seed: int = 0) -> np.ndarray:
    """A dark-field scan: near-black noisy background (a camera offset of 2 grey levels, so many channels
    read 0 and saturation is high), a dim blue-green disk of 'tissue' with bright dots."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(2, 3, (size, size, 3)), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size]
    disk = np.hypot(xx - size / 2, yy - size / 2) < size / 4
    img[disk] = np.clip(rng.normal((10, 60, 90), (4, 20, 30), (disk.sum(), 3)), 0, 255)
    img[(xx % 37 < 3) & (yy % 41 < 3) & disk] = (20, 90, 250)
    return img.astype(np.uint8)


def covered(size: int, seed: int = 0) -> np.ndarray:
    """Pink 'tissue' over the whole scan but for small specks of glass (e.g. a coloured background)."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal((200, 120, 190), 6, (size, size, 3)), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size]
    img[(xx % 128 < 16) & (yy % 128 < 16)] = GLASS
    return img.astype(np.uint8)


def he_scene(size: int, seed: int = 0, coverage: float = 0.3) -> np.ndarray:
    """Glass with a disk of smooth pink/purple texture covering ``coverage`` of the image."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (size // 32 + 2, size // 32 + 2), dtype=np.uint8)
    wave = np.asarray(Image.fromarray(coarse).resize((size + 64, size + 64), Image.Resampling.BICUBIC))
    wave = wave[:size, :size, None].astype(np.float32) / 255
    tissue = np.concatenate([230 - 100 * wave, 150 - 110 * wave, 215 - 60 * wave], axis=-1)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = size * np.sqrt(coverage / np.pi)
    inside = np.hypot(xx - size / 2, yy - size / 2) < radius if coverage < 1 else np.ones((size, size), bool)
    img = np.empty((size, size, 3), np.float32)
    img[:] = GLASS
    img[inside] = tissue[inside]
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def dark_slide(tmp_path_factory):
    """1 mm at 1.0 mpp, a 3-level Aperio-style pyramid with an mpp: only its pixels are wrong for H&E."""
    return write_wsi(tmp_path_factory.mktemp("dark") / "dark.svs", fluorescence(1024), mpp=1.0, levels=3)


# -- non-brightfield scans ----------------------------------------------------------------------------

def test_dark_slide_is_refused_naming_it_and_what_was_measured(dark_slide, tmp_path):
    result = make_tissue_mask(dark_slide, "fluo_7", tmp_path / "m.h5", tmp_path / "m.png", TissueParams())
    with Slide(dark_slide) as slide:
        thumbnail, _ = slide.read_downsampled(8.0)
    expected = luma_median(thumbnail)
    assert expected < 30  # the test image really is dark
    message = result.refused
    assert "fluo_7" in message and "brightfield H&E" in message and "brightfield_check" in message
    assert f"median brightness is {expected:.0f} of 255" in message and "tissue.min_brightness 100" in message
    assert f"{result.threshold:.3f}" in message  # the Otsu threshold it measured
    assert f"tissue mask {result.tissue_fraction:.1%} of the scan" in message
    # the mask and QC picture are written, so the slide shows in the QC table, flagged
    loaded, _ = read_mask(tmp_path / "m.h5")
    assert loaded.refused == message and loaded.brightness == pytest.approx(expected, abs=0.01)
    rows = write_slide_table([tmp_path / "m.h5"], tmp_path / "slides.tsv", tmp_path / "slides.html")
    assert rows[0]["status"] == "refused" and "fluo_7" in rows[0]["warnings"]
    html = (tmp_path / "slides.html").read_text()
    assert "Refused as not brightfield (1): fluo_7" in html and "class=" in html
    # tile extraction refuses the slide with the same message, and writes nothing
    out = tmp_path / "tiles" / "fluo_7.h5"
    with pytest.raises(SlideError) as caught:
        extract_tiles(dark_slide, "fluo_7", tmp_path / "m.h5", out, TILES, progress=False)
    assert message in str(caught.value)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_dark_slide_is_accepted_when_the_sheet_says_so(dark_slide, tmp_path):
    result = make_tissue_mask(dark_slide, "fluo_7", tmp_path / "m.h5", tmp_path / "m.png", TissueParams(),
                              brightfield_check=False)
    assert not result.refused and result.mask.any()
    assert any("brightfield_check off" in w and "median brightness" in w for w in result.warnings)
    assert mask_summary(tmp_path / "m.h5")["status"] == "ok"
    counts = extract_tiles(dark_slide, "fluo_7", tmp_path / "m.h5", tmp_path / "t.h5", TILES, progress=False)
    assert counts["counts"]["1"]["kept"] > 0  # 0.5 mpp is finer than the 1.0 mpp scan: skipped


def test_tissue_over_the_whole_scan_is_refused_and_the_threshold_is_a_config_key(tmp_path):
    path = write_wsi(tmp_path / "full.svs", covered(1024), mpp=1.0, levels=3)
    result = make_tissue_mask(path, "all_tissue", tmp_path / "m.h5", tmp_path / "m.png", TissueParams())
    assert result.tissue_fraction > 0.95 and result.brightness > 100  # bright, but no glass anywhere
    assert "all_tissue" in result.refused and f"covers {result.tissue_fraction:.1%}" in result.refused
    assert "tissue.max_fraction 0.95" in result.refused and "median brightness" not in result.refused
    lenient = make_tissue_mask(path, "all_tissue", tmp_path / "n.h5", tmp_path / "n.png",
                               TissueParams(max_fraction=1.0))
    assert not lenient.refused and not lenient.warnings


def test_brightfield_slides_are_not_refused(tmp_path):
    from magflow.phantom.slide import PhantomSpec, write_phantom

    for seed, mpp in ((0, 0.25), (1, 0.5)):
        spec = PhantomSpec(width_um=1024, height_um=1024, seed=seed, mpp=mpp, label=seed)
        write_phantom(spec, tmp_path / "p.tiff", tmp_path / "p.labels.png", tmp_path / "p.json")
        result = make_tissue_mask(tmp_path / "p.tiff", "p", tmp_path / "m.h5", tmp_path / "m.png", TissueParams())
        assert not result.refused and result.brightness > 150


def test_real_slide_is_not_refused(real_slide, tmp_path):
    result = make_tissue_mask(real_slide, "cmu", tmp_path / "m.h5", tmp_path / "m.png", TissueParams())
    assert not result.refused and result.brightness > 200 and result.tissue_fraction < 0.6


def test_sheet_column_brightfield_check(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text("slide_id\tpath\tsplit\tbrightfield_check\na\ta.svs\ttrain\t\nb\tb.svs\ttrain\toff\n"
                     "c\tc.svs\ttest\tOn\n")
    assert [e.brightfield_check for e in read_sheet(sheet)] == [True, False, True]
    sheet.write_text("slide_id\tpath\tsplit\tbrightfield_check\na\ta.svs\ttrain\tno\n")
    with pytest.raises(ConfigError) as caught:
        read_sheet(sheet)
    assert "line 2" in str(caught.value) and "brightfield_check 'no'" in str(caught.value)


# -- plain images as slides -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene():
    return he_scene(1792, seed=3, coverage=0.35)  # 896 µm at 0.5 mpp


def _plain(path: Path, rgb: np.ndarray) -> Path:
    if path.suffix == ".tif":
        tifffile.imwrite(path, rgb, photometric="rgb", compression="zlib", rowsperstrip=64)  # strips
    else:
        Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def reference_store(scene, tmp_path_factory):
    """The same pixels as a one-level, uncompressed tiled TIFF that OpenSlide reads: what a plain image must give."""
    root = tmp_path_factory.mktemp("ref")
    path = write_wsi(root / "ref.tif", scene, mpp=0.5, levels=1, style="tiff-cm", compression="none")
    mask = make_tissue_mask(path, "ref", root / "m.h5", root / "m.png", TissueParams())
    extract_tiles(path, "ref", root / "m.h5", root / "t.h5", TILES, progress=False)
    return mask, root / "t.h5"


@pytest.mark.parametrize("name", ["region.png", "region.tif"])
def test_plain_image_with_sheet_mpp_goes_through_mask_and_extraction(name, scene, reference_store, tmp_path):
    path = _plain(tmp_path / name, scene)
    if name.endswith(".tif"):
        with tifffile.TiffFile(path) as tif:
            assert not tif.pages[0].is_tiled and len(tif.pages[0].dataoffsets) > 1  # many strips
    mask = make_tissue_mask(path, "region_1", tmp_path / "m.h5", tmp_path / "m.png", TissueParams(), sheet_mpp=0.5)
    ref_mask, ref_store = reference_store
    assert not mask.refused and 0.25 < mask.tissue_fraction < 0.5
    assert np.array_equal(mask.mask, ref_mask.mask)
    extract_tiles(path, "region_1", tmp_path / "m.h5", tmp_path / "t.h5", TILES, sheet_mpp=0.5, progress=False)
    with TileStore(tmp_path / "t.h5") as store, TileStore(ref_store) as ref:
        assert store.scales == ref.scales == [0.5, 1.0]
        for mpp in store.scales:
            group, expected = store.group(mpp), ref.group(mpp)
            assert group["images"].shape[0] == expected["images"].shape[0] > 0
            assert np.array_equal(group["coords"][...], expected["coords"][...])
            assert np.array_equal(group["images"][...], expected["images"][...])
            assert group.attrs["mpp"] == mpp
        slide = store.json_attr("slide")
        assert store.attrs["mpp_source"] == slide["mpp_source"] == "sheet"
        assert slide["reader"] == "plain-image" and slide["decoder"] == "pillow"
        assert slide["levels"] == [[1.0, 0.5, 1792, 1792]]
    summary = mask_summary(tmp_path / "m.h5")
    assert summary["reader"] == "plain-image" and summary["mpp_source"] == "sheet"


def test_jpeg_and_grey_png_open_as_one_level_slides(tmp_path):
    rgb = he_scene(256, seed=1, coverage=0.5)
    Image.fromarray(rgb).save(tmp_path / "r.jpg", quality=95)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "g.png")
    with Slide(tmp_path / "r.jpg", "j", sheet_mpp=0.25) as slide:
        pixels, achieved = slide.read_region(0, 0, 256, 256, 0.25)
        assert slide.vendor == "plain JPEG" and achieved == 0.25
        assert np.abs(pixels.astype(int) - rgb).mean() < 3  # JPEG error only
    with Slide(tmp_path / "g.png", "g", sheet_mpp=0.25) as slide:
        pixels, _ = slide.read_region(0, 0, 256, 256, 0.25)
        assert np.array_equal(pixels, np.repeat(rgb[..., 1:2], 3, axis=-1))


@pytest.mark.parametrize("name", ["big.png", "big.tif"])
def test_oversize_plain_image_is_refused_before_decoding(name, tmp_path):
    path = _plain(tmp_path / name, np.full((600, 500, 3), 200, np.uint8))
    with pytest.raises(SlideError) as caught:
        make_tissue_mask(path, "huge_region", tmp_path / "m.h5", tmp_path / "m.png", TissueParams(),
                         sheet_mpp=0.5, max_plain_megapixels=0.25)
    message = str(caught.value)
    assert "huge_region" in message and "500x600 px" in message and "read.max_plain_image_megapixels" in message
    assert "tiled pyramidal TIFF" in message and "vips tiffsave" in message
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "m.png").exists()
    with Slide(path, "huge_region", sheet_mpp=0.5, max_plain_megapixels=0.3) as slide:
        assert slide.dimensions == (500, 600)


def test_plain_image_without_mpp_names_the_slide_and_the_column(tmp_path):
    path = _plain(tmp_path / "r.png", np.full((64, 64, 3), 200, np.uint8))
    with pytest.raises(MissingMppError) as caught:
        make_tissue_mask(path, "bracs_12", tmp_path / "m.h5", tmp_path / "m.png", TissueParams())
    assert "bracs_12" in str(caught.value) and "`mpp` column" in str(caught.value)


@pytest.mark.parametrize("name", ["r.png", "r.jpg", "r.tif"])
def test_truncated_plain_image_says_damaged_or_truncated(name, tmp_path):
    good = _plain(tmp_path / f"good_{name}", np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8))
    data = good.read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(SlideError) as caught:
        Slide(bad, "cut_region", sheet_mpp=0.5)
    assert "cut_region" in str(caught.value) and "damaged or truncated" in str(caught.value)


# -- the workflow ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_workflow_refuses_a_dark_slide_and_keep_going_finishes_the_others(tmp_path):
    from test_workflow import REPO, make_project, run

    data = tmp_path / "data"
    data.mkdir()
    write_wsi(data / "dark.svs", fluorescence(768), mpp=1.0, levels=2)
    write_wsi(data / "dark_ok.svs", fluorescence(768, seed=1), mpp=1.0, levels=2)
    _plain(data / "region.png", he_scene(1536, coverage=0.4))
    root = make_project(tmp_path / "wf", [], tilesets={"train": {"scales": [1.0], "max_tiles_per_scale": 4},
                                                     "eval": {"scales": [1.0]}})
    (root / "config" / "slides.tsv").write_text(
        "slide_id\tpath\tmpp\tsplit\tbrightfield_check\n"
        f"dark\t{data / 'dark.svs'}\t\ttrain\t\n"
        f"dark_ok\t{data / 'dark_ok.svs'}\t\ttrain\toff\n"
        f"region\t{data / 'region.png'}\t0.5\ttest\t\n")
    targets = ["results/qc/slides.html"] + [f"results/tiles/train/{s}.h5" for s in ("dark", "dark_ok", "region")]
    result = run(["-s", str(REPO / "Snakefile"), "--cores", "2", "--keep-going", *targets], root)
    assert result.returncode != 0, "the dark slide must fail its extraction"
    tiles = root / "results" / "tiles" / "train"
    assert not (tiles / "dark.h5").exists()
    assert (tiles / "dark_ok.h5").exists() and (tiles / "region.h5").exists()
    log = (root / "logs" / "extract_tiles" / "train" / "dark.log").read_text()
    assert "Slide 'dark'" in log and "median brightness" in log and "brightfield H&E" in log
    table = {row.split("\t")[0]: row for row in (root / "results" / "qc" / "slides.tsv").read_text().splitlines()}
    assert "\trefused\t" in table["dark"] and "\tok\t" in table["dark_ok"] and "\tok\t" in table["region"]
    assert "plain-image" in table["region"] and "\tsheet\t" in table["region"]
    with h5py.File(tiles / "region.h5") as h5:
        assert json.loads(h5.attrs["slide"])["reader"] == "plain-image"
    leftovers = [p.name for p in (root / "results").rglob("*") if ".tmp" in p.name]
    assert not leftovers


def test_cli_mask_refuses_a_dark_slide_unless_told(dark_slide, tmp_path):
    import sys

    command = [sys.executable, "-m", "magflow.cli", "tissue-mask", str(dark_slide), "--slide-id", "fluo",
               "--out-mask", str(tmp_path / "m.h5"), "--out-qc", str(tmp_path / "m.png")]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2 and "Slide 'fluo'" in refused.stderr and "--no-brightfield-check" in refused.stderr
    accepted = subprocess.run(command + ["--no-brightfield-check"], capture_output=True, text=True)
    assert accepted.returncode == 0 and "tissue fraction" in accepted.stdout
