import numpy as np
import pytest

from magflow.errors import UpsamplingError
from magflow.slides.reader import Level, Slide, plan_read
from wsi_factory import stripes, write_wsi

LEVELS = [Level(i, 2.0 ** i, 0.25 * 2 ** i, 4096 >> i, 4096 >> i) for i in range(4)]  # 0.25 .. 2.0 mpp


@pytest.mark.parametrize("target, level, scale, achieved", [
    (0.25, 0, 1.0, 0.25),
    (0.375, 0, 1.5, 0.375),
    (0.75, 1, 1.5, 0.75),    # largest downsample still at or finer than the target
    (1.0, 2, 1.0, 1.0),
    (1.01, 2, 1.0, 1.0),     # within 2%: read natively, achieved mpp is the level's own
    (0.99, 2, 1.0, 1.0),     # 1% finer than the 1.0 level: within tolerance, served natively
    (0.97, 1, 1.94, 0.97),   # 3% finer: beyond tolerance, downsampled from the 0.5 level
    (3.0, 3, 1.5, 3.0),
    (0.246, 0, 1.0, 0.25),   # within tolerance below native
])
def test_plan_read_picks_coarsest_level_at_or_finer(target, level, scale, achieved):
    plan = plan_read(LEVELS, target, "s")
    assert (plan.level, plan.achieved_mpp) == (level, pytest.approx(achieved))
    assert plan.scale == pytest.approx(scale)


def test_upsampling_is_refused_with_a_clear_message():
    with pytest.raises(UpsamplingError) as caught:
        plan_read(LEVELS, 0.24, "slideX")
    message = str(caught.value)
    assert "slideX" in message and "0.24" in message and "0.25" in message and "never upsamples" in message
    plan_read(LEVELS, 0.24, "slideX", tolerance=0.05)  # a looser tolerance is the user's explicit choice


@pytest.fixture(scope="module")
def grating(tmp_path_factory):
    """A 0.25 mpp slide whose vertical stripes have a period of 16 µm (64 level-0 px)."""
    path = tmp_path_factory.mktemp("wsi") / "grating.svs"
    return write_wsi(path, stripes(2048, 2048, period_px=64), mpp=0.25, levels=4)


def _period_px(image: np.ndarray) -> float:
    profile = image[..., 1].astype(float).mean(axis=0)
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    k = int(np.argmax(spectrum[1:])) + 1
    return len(profile) / k


@pytest.mark.parametrize("target", [0.25, 0.375, 0.5, 0.75, 1.0, 2.0])
def test_read_region_keeps_physical_size(grating, target):
    size = 256
    with Slide(grating) as slide:
        assert slide.mpp == 0.25 and slide.mpp_info.source == "openslide.mpp"
        pixels, achieved = slide.read_region(0, 0, size, size, target)
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
    assert achieved == pytest.approx(target)
    # 16 µm period at `target` µm/px; the FFT bin resolution is size/k, so allow one bin of slack.
    expected = 16.0 / target
    k = size / expected
    assert _period_px(pixels) == pytest.approx(expected, rel=1.0 / k)


def test_coarse_read_matches_area_downsample_of_fine_read(grating):
    with Slide(grating) as slide:
        fine, _ = slide.read_region(512, 256, 512, 512, 0.25)
        coarse, _ = slide.read_region(512, 256, 256, 256, 0.5)  # native level 1
        mid, _ = slide.read_region(512, 256, 128, 128, 1.0)     # native level 2
    fine_half = fine.reshape(256, 2, 256, 2, 3).astype(float).mean(axis=(1, 3))
    fine_quarter = fine.reshape(128, 4, 128, 4, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(coarse - fine_half).mean() < 2.0
    assert np.abs(mid - fine_quarter).mean() < 2.0


def test_outside_the_slide_reads_as_white_glass(grating):
    with Slide(grating) as slide:
        pixels, _ = slide.read_region(2048 - 64, 0, 128, 128, 0.25)
    assert (pixels[:, 64:] == 255).all()
    assert pixels[:, :64].mean() < 250


def test_streaming_downsample_is_independent_of_block_size(tmp_path):
    rng = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), 32, 0), 32, 1)
    path = write_wsi(tmp_path / "single.svs", rgb, mpp=0.5, levels=1)  # single level, like CMU-1-Small-Region
    with Slide(path) as slide:
        whole, achieved = slide.read_downsampled(8.0, block_level_px=1 << 20)
        blocked, _ = slide.read_downsampled(8.0, block_level_px=200)
    assert achieved == 8.0 and whole.shape == (128, 160, 3)
    assert np.abs(whole.astype(int) - blocked).max() <= 1
    # each 16 µm block of the random image is a 2x2 patch at 8 µm/px with the block's colour
    assert np.abs(whole[::2, ::2].astype(int) - rgb[::32, ::32]).mean() < 3


def test_describe_records_identity_and_mpp_source(grating):
    with Slide(grating, "g1", sheet_mpp=0.26) as slide:
        info = slide.describe()
    assert info["slide_id"] == "g1" and info["mpp_source"] == "sheet" and info["metadata_mpp"] == 0.25
    assert len(info["sha256_first_mib"]) == 64 and info["size_bytes"] > 0
    assert [round(lv[1], 3) for lv in info["levels"]] == [0.26, 0.52, 1.04, 2.08]


def test_real_slide_mpp_and_refusal(real_slide):
    with Slide(real_slide) as slide:
        assert slide.mpp == pytest.approx(0.499) and slide.mpp_info.source == "openslide.mpp"
        assert slide.dimensions == (2220, 2967) and len(slide.levels) == 1
        with pytest.raises(UpsamplingError, match="0.499"):
            slide.read_region(0, 0, 224, 224, 0.25)
        pixels, achieved = slide.read_region(1000, 1000, 224, 224, 1.0)
    assert achieved == 1.0 and pixels.shape == (224, 224, 3)
