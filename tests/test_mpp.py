import pytest

from magflow.errors import ConfigError, MissingMppError
from magflow.slides.mpp import resolve_mpp


def test_openslide_properties_come_first():
    info = resolve_mpp({"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2531", "aperio.MPP": "0.5"}, "s")
    assert info.source == "openslide.mpp"
    assert info.mpp == pytest.approx((0.2527 + 0.2531) / 2)


def test_vendor_key_when_openslide_has_none():
    info = resolve_mpp({"aperio.MPP": "0.4990"}, "s")
    assert (info.mpp, info.source) == (pytest.approx(0.499), "vendor:aperio.MPP")


@pytest.mark.parametrize("unit, resolution, expected", [
    ("centimeter", 20000.0, 0.5),   # 1e4 µm / 20000 px
    ("inch", 101600.0, 0.25),       # 25400 µm / 101600 px
])
def test_tiff_resolution_units(unit, resolution, expected):
    props = {"tiff.ResolutionUnit": unit, "tiff.XResolution": str(resolution), "tiff.YResolution": str(resolution)}
    info = resolve_mpp(props, "s")
    assert info.source == "tiff.resolution"
    assert info.mpp == pytest.approx(expected)


@pytest.mark.parametrize("props", [
    {"tiff.ResolutionUnit": "none", "tiff.XResolution": "1", "tiff.YResolution": "1"},
    {"tiff.ResolutionUnit": "inch", "tiff.XResolution": "72", "tiff.YResolution": "72"},  # 352 µm/px: a default
    {"openslide.mpp-x": "0", "openslide.mpp-y": "0"},
    {"aperio.MPP": "nan"},
    {},
])
def test_no_usable_mpp_is_an_error_naming_slide_and_fix(props):
    with pytest.raises(MissingMppError) as caught:
        resolve_mpp(props, "TCGA-XX-0001")
    message = str(caught.value)
    assert "TCGA-XX-0001" in message and "`mpp` column" in message and "does not guess" in message


def test_sheet_mpp_always_wins():
    info = resolve_mpp({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25"}, "s", sheet_mpp=0.5)
    assert (info.mpp, info.source) == (0.5, "sheet")


def test_implausible_sheet_mpp_is_refused():
    with pytest.raises(ConfigError, match="slide7.*plausible"):
        resolve_mpp({}, "slide7", sheet_mpp=400.0)
