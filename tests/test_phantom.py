"""The synthetic phantom slide: file format, determinism, labels and its scale design."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from scipy import ndimage

from magflow.errors import ConfigError
from magflow.phantom import slide as phantom
from magflow.slides.aperio_tiff import downsample_2x, pyramid
from magflow.phantom.slide import CLASS_NAMES, PhantomSpec, phantom_layout, render_phantom, write_phantom
from magflow.phantom.render import E_VECTOR, GLASS_RGB, H_VECTOR

RARE = CLASS_NAMES.index("rare")
SMALL_DENSE = CLASS_NAMES.index("small_dense")
LARGE_SPARSE = CLASS_NAMES.index("large_sparse")
STROMA = CLASS_NAMES.index("stroma")


def _write(spec: PhantomSpec, folder: Path) -> dict:
    return write_phantom(spec, folder / "s.tif", folder / "s.png", folder / "s.json")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhantomSpec, Path, dict]:
    spec = PhantomSpec(width_um=512.0, height_um=384.0, seed=3, label=1)
    folder = tmp_path_factory.mktemp("phantom")
    return spec, folder, _write(spec, folder)


def test_openslide_reads_an_aperio_pyramid_with_the_spec_mpp(written):
    spec, folder, _ = written
    with openslide.OpenSlide(folder / "s.tif") as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == spec.mpp
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == spec.mpp
        assert slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "40"
        assert slide.level_count >= 4
        assert slide.dimensions == (round(spec.width_um / spec.mpp), round(spec.height_um / spec.mpp))
        for level, downsample in enumerate(slide.level_downsamples):
            assert downsample == pytest.approx(2**level)
            assert slide.level_dimensions[level] == (2048 >> level, 1536 >> level)
    assert sorted(p.name for p in folder.iterdir()) == ["s.json", "s.png", "s.tif"]  # no temporaries


def test_pixels_read_back_match_the_render_and_its_pyramid(written):
    spec, folder, _ = written
    rgb, _ = render_phantom(spec)
    levels = pyramid(rgb)
    with openslide.OpenSlide(folder / "s.tif") as slide:
        for level in (0, 2):
            read = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
            error = np.abs(read.astype(int) - levels[level])
            assert error.mean() < 3.0, level  # JPEG Q90


def test_downsample_averages_2x2_blocks_and_repeats_odd_edges():
    image = np.array([[0, 2, 10], [4, 6, 20]], np.uint8)[..., None]
    assert downsample_2x(image)[..., 0].tolist() == [[3, 15]]
    assert [lv.shape[:2] for lv in pyramid(np.zeros((1100, 700, 3), np.uint8))] == [
        (1100, 700), (550, 350), (275, 175), (138, 88)]


def test_label_png_and_sidecar(written):
    spec, folder, meta = written
    labels = np.asarray(Image.open(folder / "s.png"))
    assert labels.dtype == np.uint8 and labels.shape == (round(384 / spec.label_mpp), round(512 / spec.label_mpp))
    assert np.array_equal(labels, render_phantom(spec)[1])
    assert json.loads((folder / "s.json").read_text()) == meta
    assert meta["label_mpp"] == spec.label_mpp and meta["mpp"] == spec.mpp
    assert meta["seed"] == 3 and meta["slide_label"] == 1
    assert meta["slide_size_px"] == [2048, 1536] and meta["slide_size_um"] == [512.0, 384.0]
    assert [meta["classes"][str(i)]["name"] for i in range(len(CLASS_NAMES))] == list(CLASS_NAMES)
    assert all(c["description"] for c in meta["classes"].values())
    fractions = meta["class_fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert fractions["rare"] == pytest.approx(np.mean(labels == RARE))
    assert meta["generator_version"] and meta["parameters"]["small_nucleus_radius_um"] == 2.5


def test_same_seed_same_pixels_other_seed_other_pixels():
    spec = PhantomSpec(width_um=256.0, height_um=256.0, seed=5, label=1)
    rgb, labels = render_phantom(spec)
    again_rgb, again_labels = render_phantom(spec)
    assert np.array_equal(rgb, again_rgb) and np.array_equal(labels, again_labels)
    other_rgb, _ = render_phantom(replace(spec, seed=6))
    assert not np.array_equal(rgb, other_rgb)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rare_class_present_iff_label_is_1(seed):
    spec = PhantomSpec(width_um=512.0, height_um=512.0, seed=seed)
    without = phantom_layout(spec).labels
    with_rare = phantom_layout(replace(spec, label=1)).labels
    assert not (without == RARE).any()
    assert (with_rare == RARE).any()
    unchanged = with_rare != RARE
    assert np.array_equal(with_rare[unchanged], without[unchanged])  # same slide otherwise


@pytest.mark.parametrize("seed", [0, 1])
def test_default_slide_has_tissue_fragments_and_at_least_four_tissue_classes(seed):
    labels = phantom_layout(PhantomSpec(seed=seed, label=1)).labels
    assert labels.shape == (1024, 1024)  # 2048 µm at 2 µm/px
    tissue = labels > 0
    assert 0.3 <= tissue.mean() <= 0.7
    assert len(np.unique(labels[tissue])) >= 5
    assert 0.01 <= np.mean(labels[tissue] == RARE) <= 0.08


def test_glass_only_slide():
    rgb, labels = render_phantom(PhantomSpec(width_um=256.0, height_um=256.0, tissue=False))
    assert not labels.any()
    assert np.abs(rgb.mean(axis=(0, 1)) - GLASS_RGB).max() < 1.5
    assert 0.3 < rgb.std() < 4


def test_slide_without_mpp(tmp_path):
    _write(PhantomSpec(width_um=256.0, height_um=256.0, write_mpp=False), tmp_path)
    with openslide.OpenSlide(tmp_path / "s.tif") as slide:
        assert openslide.PROPERTY_NAME_MPP_X not in slide.properties
        assert openslide.PROPERTY_NAME_MPP_Y not in slide.properties
        assert slide.properties["tiff.ResolutionUnit"] == "none"  # no physical size anywhere
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"


def test_20x_phantom_keeps_the_physical_layout(tmp_path):
    spec = PhantomSpec(width_um=512.0, height_um=512.0, seed=4, mpp=0.5, label=1)
    meta = _write(spec, tmp_path)
    with openslide.OpenSlide(tmp_path / "s.tif") as slide:
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == 0.5
        assert slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "20"
        assert slide.dimensions == (1024, 1024) and slide.level_count == 4
    labels = np.asarray(Image.open(tmp_path / "s.png"))
    assert np.array_equal(labels, phantom_layout(replace(spec, mpp=0.25)).labels)
    assert meta["slide_size_um"] == [512.0, 512.0]


def test_invalid_specs_are_refused():
    for bad in ({"label": 2}, {"tissue": False, "label": 1}, {"mpp": 0.0}, {"jpeg_quality": 0}):
        with pytest.raises(ConfigError):
            PhantomSpec(**bad)


def test_failed_writes_leave_nothing_behind(tmp_path, monkeypatch):
    spec = PhantomSpec(width_um=128.0, height_um=128.0)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):
        write_phantom(spec, blocker / "s.tif", blocker / "s.png", blocker / "s.json")
    out = tmp_path / "out"
    with pytest.raises(OSError):  # only the label's folder is bad: the slide is not kept either
        write_phantom(spec, out / "s.tif", blocker / "s.png", out / "s.json")

    def write_then_fail(path, *args, **kwargs):
        real_write(path, *args, **kwargs)
        raise RuntimeError("disk full")

    real_write = phantom.write_aperio_tiff
    monkeypatch.setattr(phantom, "write_aperio_tiff", write_then_fail)
    with pytest.raises(RuntimeError):
        _write(spec, out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["blocker", "out"]


def _haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """H optical density by least-squares colour deconvolution with the phantom's stain vectors."""
    od = -np.log10(np.maximum(rgb, 1) / GLASS_RGB.astype(np.float32))
    unmix = np.linalg.pinv(np.stack([H_VECTOR, E_VECTOR], axis=1))[0].astype(np.float32)
    return od @ unmix


def test_cell_scale_pair_differs_only_at_high_magnification():
    """small_dense vs large_sparse: same mean colour at 2 µm/px, 4x the nucleus area at 0.25 µm/px."""
    size = 1024.0
    seed = next(s for s in range(40) if all(
        np.mean(phantom_layout(PhantomSpec(size, size, seed=s)).labels == c) > 0.04 for c in (SMALL_DENSE, LARGE_SPARSE)))
    spec = PhantomSpec(size, size, seed=seed)
    rgb, labels = render_phantom(spec)
    factor = round(spec.label_mpp / spec.mpp)
    low = rgb.reshape(labels.shape[0], factor, labels.shape[1], factor, 3).mean(axis=(1, 3))  # 2 µm/px
    inner = {c: ndimage.binary_erosion(labels == c, iterations=8) for c in (SMALL_DENSE, LARGE_SPARSE, STROMA)}
    mean = {c: low[m].mean(axis=0) for c, m in inner.items() if m.any()}
    assert np.abs(mean[SMALL_DENSE] - mean[LARGE_SPARSE]).max() < 4.0
    if STROMA in mean:
        assert np.abs(mean[SMALL_DENSE] - mean[STROMA]).max() > 20.0

    area_um2 = {}
    for c in (SMALL_DENSE, LARGE_SPARSE):
        rows, cols = ndimage.find_objects(inner[c].astype(np.uint8))[0]
        crop = (slice(rows.start * factor, rows.stop * factor), slice(cols.start * factor, cols.stop * factor))
        region = inner[c][rows, cols].repeat(factor, axis=0).repeat(factor, axis=1)
        parts, _ = ndimage.label((_haematoxylin(rgb[crop]) > 0.5) & region)
        sizes = np.bincount(parts.ravel())[1:]
        area_um2[c] = np.median(sizes[sizes > 0]) * spec.mpp**2
    assert area_um2[SMALL_DENSE] == pytest.approx(np.pi * 2.5**2, rel=0.25)
    assert area_um2[LARGE_SPARSE] == pytest.approx(np.pi * 5.0**2, rel=0.25)
