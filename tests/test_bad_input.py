"""Bad slides fail with a message that names the slide and the fix."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from magflow.errors import MissingMppError, SlideError
from magflow.slides.reader import Slide
from wsi_factory import stripes, write_wsi


@pytest.fixture()
def good(tmp_path):
    return write_wsi(tmp_path / "good.svs", stripes(1024, 1024, 40), mpp=0.25, levels=3)


def _message(path, slide_id="bad_slide", **kwargs):
    with pytest.raises(SlideError) as caught:
        Slide(path, slide_id, **kwargs)
    message = str(caught.value)
    assert slide_id in message and str(path) in message
    return message


def test_missing_path(tmp_path):
    assert "file not found" in _message(tmp_path / "nope.svs") and "`path` column" in _message(tmp_path / "nope.svs")


def test_corrupt_truncated_file(tmp_path, good):
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(good.read_bytes()[:4000])
    assert "damaged or truncated" in _message(bad)


@pytest.mark.parametrize("keep", [2, 4000, 0.9])
def test_truncated_svs_says_damaged_or_truncated(tmp_path, good, keep):
    """Cut before the magic number, before the first directory, or inside the pyramid: never "not a format"."""
    data = good.read_bytes()
    bad = tmp_path / "cut.svs"
    bad.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    message = _message(bad)
    assert "damaged or truncated" in message and "not a format" not in message


def test_truncated_real_svs_says_damaged_or_truncated(tmp_path, real_slide):
    data = real_slide.read_bytes()
    for fraction in (0.5, 0.9):
        bad = tmp_path / f"cut_{fraction}.svs"
        bad.write_bytes(data[:int(len(data) * fraction)])
        message = _message(bad, "cmu_cut")
        assert "damaged or truncated" in message and "OpenSlide cannot read" not in message


def test_unsupported_format(tmp_path):
    gif = tmp_path / "photo.gif"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(gif)
    message = _message(gif)
    assert "not a format magflow reads" in message and "vips" in message


def test_plain_image_without_sheet_mpp_names_the_column(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((256, 256, 3), np.uint8), photometric="rgb")  # strips, not tiles
    with pytest.raises(MissingMppError) as caught:
        Slide(plain, "region_9")
    assert "region_9" in str(caught.value) and "`mpp` column" in str(caught.value)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    assert "empty (0 bytes)" in _message(empty)


def test_missing_mpp_then_fixed_by_the_sheet(tmp_path):
    path = write_wsi(tmp_path / "nompp.tif", stripes(512, 512, 40), style="none", levels=2)
    with pytest.raises(MissingMppError) as caught:
        Slide(path, "held_out_7")
    assert "held_out_7" in str(caught.value) and "`mpp` column" in str(caught.value)
    with Slide(path, "held_out_7", sheet_mpp=0.5) as slide:
        assert (slide.mpp, slide.mpp_info.source) == (0.5, "sheet")
        pixels, achieved = slide.read_region(0, 0, 64, 64, 1.0)
    assert pixels.shape == (64, 64, 3) and achieved == 1.0


def test_aperio_without_mpp_field(tmp_path):
    path = write_wsi(tmp_path / "nompp.svs", stripes(512, 512, 40), mpp=None, levels=2)
    with pytest.raises(MissingMppError):
        Slide(path, "aperio_no_mpp")


@pytest.mark.parametrize("style, mpp", [("tiff-cm", 0.5), ("tiff-inch", 0.25)])
def test_generic_tiff_resolution_tags_are_used(tmp_path, style, mpp):
    path = write_wsi(tmp_path / f"{style}.tif", stripes(512, 512, 40), mpp=mpp, style=style, levels=2)
    with Slide(path) as slide:
        assert slide.mpp == pytest.approx(mpp)
        assert slide.mpp_info.source in ("openslide.mpp", "tiff.resolution")


def test_corrupt_tiles_fail_the_read_naming_the_slide(tmp_path):
    rng = np.random.default_rng(1)
    path = write_wsi(tmp_path / "tiles.svs", rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8),
                     mpp=0.25, levels=1)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
    data = bytearray(path.read_bytes())
    for offset, count in zip(offsets, counts):  # destroy each tile's JPEG start-of-image marker
        data[offset:offset + 4] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    with Slide(path, "damaged") as slide, pytest.raises(SlideError) as caught:
        slide.read_region(0, 0, 1024, 1024, 0.25)
    assert "damaged" in str(caught.value) and "corrupt" in str(caught.value)
