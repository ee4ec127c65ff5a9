import h5py
import json
import numpy as np
import pytest

from magflow.preprocess.mask_store import mask_summary, read_mask
from magflow.preprocess.tissue import TissueParams, detect_tissue, otsu_threshold, saturation
from magflow.preprocess.tissue_mask import make_tissue_mask
from wsi_factory import write_wsi

GLASS = (242, 240, 244)
TISSUE = (200, 120, 190)  # pink/purple, saturation 0.4


def test_saturation_known_values():
    rgb = np.array([[[255, 0, 0], [128, 128, 128], [0, 0, 0], [200, 100, 50]]], np.uint8)
    assert saturation(rgb)[0] == pytest.approx([1.0, 0.0, 0.0, 0.75])


def test_otsu_matches_brute_force_between_class_variance():
    rng = np.random.default_rng(0)
    values = np.clip(np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.5, 0.08, 2000)]), 0, 1)
    threshold = otsu_threshold(values)
    # independent computation: scan candidate thresholds, evaluate the within-class variance directly
    candidates = [t for t in np.linspace(0, 1, 257)[1:-1] if 0 < (values < t).sum() < values.size]
    within = [values[values < t].var() * (values < t).mean() + values[values >= t].var() * (values >= t).mean()
              for t in candidates]
    assert threshold == pytest.approx(candidates[int(np.argmin(within))], abs=2 / 256)
    assert 0.15 < threshold < 0.35


def _scene(mpp: float) -> np.ndarray:
    """2 mm × 2 mm of glass with: a 1 mm disk of tissue containing a 40 µm hole and a 300 µm lumen,
    and a 60 µm speck far away. Sizes are physical, so the scene can be drawn at any mpp."""
    n = int(round(2000 / mpp))
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * mpp
    r = np.hypot(xx - 900, yy - 900)
    tissue = (r < 500) & (np.hypot(xx - 900, yy - 1000) > 20) & (np.hypot(xx - 800, yy - 750) > 150)
    tissue |= np.hypot(xx - 1800, yy - 1800) < 30
    img = np.empty((n, n, 3), np.uint8)
    img[:] = GLASS
    img[tissue] = TISSUE
    return img


@pytest.mark.parametrize("mpp", [4.0, 8.0])
def test_morphology_is_sized_in_microns(mpp):
    params = TissueParams(mpp=mpp, smooth_um=0, close_um=0, min_tissue_um2=20000, max_hole_um2=4000)
    result = detect_tissue(_scene(mpp), mpp, params)
    area_um2 = result.mask.sum() * mpp * mpp
    expected = np.pi * 500 ** 2 - np.pi * 150 ** 2  # small hole filled, lumen kept, speck removed
    assert area_um2 == pytest.approx(expected, rel=0.03)
    def at(x_um, y_um):
        return result.mask[int(y_um / mpp), int(x_um / mpp)]
    assert at(900, 1000)       # 40 µm hole (1257 µm² < 4000) was filled
    assert not at(800, 750)    # 300 µm lumen (70686 µm²) was kept as a hole
    assert not at(1800, 1800)  # 60 µm speck (2827 µm² < 20000) was removed
    assert not result.warnings


def test_blank_slide_gives_empty_mask_with_a_warning():
    rng = np.random.default_rng(0)
    glass = np.clip(np.array(GLASS) + rng.normal(0, 2, (200, 200, 3)), 0, 255).astype(np.uint8)
    result = detect_tissue(glass, 8.0, TissueParams())
    assert not result.mask.any() and result.tissue_fraction == 0.0
    assert result.warnings and "no tissue" in result.warnings[0]


def test_mask_step_writes_mask_qc_and_provenance(tmp_path):
    path = write_wsi(tmp_path / "scene.svs", _scene(1.0), mpp=1.0, levels=4)
    mask_path, qc_path = tmp_path / "out" / "scene.h5", tmp_path / "out" / "scene.png"
    result = make_tissue_mask(path, "scene", mask_path, qc_path, TissueParams(), config={"k": 1})
    assert qc_path.stat().st_size > 1000 and qc_path.read_bytes()[:4] == b"\x89PNG"
    loaded, slide = read_mask(mask_path)
    assert np.array_equal(loaded.mask, result.mask) and loaded.mpp == 8.0
    assert slide["mpp"] == 1.0 and slide["mpp_source"] == "openslide.mpp"
    with h5py.File(mask_path) as h5:
        record = json.loads(h5.attrs["provenance"])
    assert record["config"] == {"k": 1} and "git" in record and record["packages"]["numpy"] != "not installed"
    summary = mask_summary(mask_path)
    assert summary["tissue_area_mm2"] == pytest.approx(np.pi * (0.5 ** 2 - 0.15 ** 2), rel=0.08)
    assert sorted(p.name for p in mask_path.parent.iterdir()) == ["scene.h5", "scene.png"]  # no temp files


def test_blank_slide_through_the_step_is_not_a_crash(tmp_path):
    path = write_wsi(tmp_path / "blank.svs", np.full((1024, 1024, 3), GLASS, np.uint8), mpp=1.0, levels=3)
    result = make_tissue_mask(path, "blank", tmp_path / "b.h5", tmp_path / "b.png", TissueParams())
    assert result.warnings
    assert "no tissue" in mask_summary(tmp_path / "b.h5")["warnings"]


def test_real_slide_tissue(real_slide, tmp_path):
    result = make_tissue_mask(real_slide, "CMU-1-Small-Region", tmp_path / "m.h5", tmp_path / "m.png",
                              TissueParams())
    assert 0.2 < result.tissue_fraction < 0.6
    assert result.mask.shape == (int(2967 * 0.499 / 8), int(2220 * 0.499 / 8))


def test_mask_of_a_phantom_matches_its_ground_truth(tmp_path):
    from PIL import Image

    from magflow.phantom.slide import PhantomSpec, write_phantom

    spec = PhantomSpec(width_um=1024, height_um=1024, seed=5, label=1)
    meta = write_phantom(spec, tmp_path / "p.tiff", tmp_path / "p.labels.png", tmp_path / "p.json")
    result = make_tissue_mask(tmp_path / "p.tiff", "p", tmp_path / "m.h5", tmp_path / "m.png", TissueParams())
    labels = np.asarray(Image.open(tmp_path / "p.labels.png"))
    factor = round(result.mpp / meta["label_mpp"])
    h, w = result.mask.shape
    truth = (labels[:h * factor, :w * factor] > 0).reshape(h, factor, w, factor).mean(axis=(1, 3)) > 0.5
    iou = (truth & result.mask).sum() / (truth | result.mask).sum()
    assert iou > 0.85, iou
