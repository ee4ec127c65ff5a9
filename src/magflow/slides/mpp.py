"""Resolve a slide's microns-per-pixel (mpp) through a documented chain, recording the link used.

The chain, first match wins:

0. ``sheet``: an explicit ``mpp`` in the slide sheet. It always wins when given.
1. ``openslide.mpp``: the ``openslide.mpp-x`` / ``openslide.mpp-y`` properties.
2. ``vendor:<key>``: a vendor-specific property (see ``VENDOR_MPP_KEYS``).
3. ``tiff.resolution``: TIFF ``XResolution``/``YResolution`` with a ``ResolutionUnit`` of inch or
   centimeter. A unit of ``none`` is never used, and a value outside ``PLAUSIBLE_MPP`` (for example
   the 72 dpi that many writers put there by default) is rejected.

No match is a :class:`MissingMppError` that names the slide and the fix. magflow never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from magflow.errors import ConfigError, MissingMppError

# Whole-slide scanners image between ~0.1 (100x oil) and ~16 (thumbnails) µm/px; anything outside
# this range is metadata noise, not a resolution.
PLAUSIBLE_MPP = (0.05, 50.0)

# Vendor keys holding a resolution in µm/px, as (x key, y key). OpenSlide already turns most of these
# into openslide.mpp-x/y; they are kept as a fallback for files where it does not.
VENDOR_MPP_KEYS: tuple[tuple[str, str], ...] = (
    ("aperio.MPP", "aperio.MPP"),
    ("hamamatsu.XResolution.um", "hamamatsu.YResolution.um"),
    ("mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X",
     "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_Y"),
    ("philips.DICOM_PIXEL_SPACING.x.um", "philips.DICOM_PIXEL_SPACING.y.um"),
    ("ventana.ScanRes", "ventana.ScanRes"),
    ("leica.mpp-x", "leica.mpp-y"),
)

_MICRONS_PER_UNIT = {"centimeter": 1e4, "inch": 25400.0}


@dataclass(frozen=True)
class MppInfo:
    """A slide's level-0 resolution and the link of the chain that gave it."""

    mpp_x: float
    mpp_y: float
    source: str

    @property
    def mpp(self) -> float:
        """The isotropic mpp used for all scale arithmetic (mean of x and y)."""
        return (self.mpp_x + self.mpp_y) / 2.0


def _as_float(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plausible(mpp: float | None) -> bool:
    return mpp is not None and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]


def _pair(props: Mapping[str, str], key_x: str, key_y: str) -> tuple[float, float] | None:
    x, y = _as_float(props.get(key_x)), _as_float(props.get(key_y))
    if _plausible(x) and _plausible(y):
        assert x is not None and y is not None
        return x, y
    return None


def _from_tiff_resolution(props: Mapping[str, str]) -> tuple[float, float] | None:
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    if unit not in _MICRONS_PER_UNIT:
        return None
    x_res, y_res = _as_float(props.get("tiff.XResolution")), _as_float(props.get("tiff.YResolution"))
    if not x_res or not y_res or x_res <= 0 or y_res <= 0:
        return None
    mpp_x, mpp_y = _MICRONS_PER_UNIT[unit] / x_res, _MICRONS_PER_UNIT[unit] / y_res
    return (mpp_x, mpp_y) if _plausible(mpp_x) and _plausible(mpp_y) else None


def resolve_mpp(props: Mapping[str, str], slide: str, sheet_mpp: float | None = None) -> MppInfo:
    """Return the slide's level-0 mpp from the chain described in the module docstring.

    ``props`` are the OpenSlide properties; ``slide`` names the slide in error messages.
    """
    if sheet_mpp is not None and not (isinstance(sheet_mpp, float) and math.isnan(sheet_mpp)):
        if not _plausible(float(sheet_mpp)):
            raise ConfigError(
                f"Slide '{slide}': mpp={sheet_mpp} in the slide sheet is outside the plausible range "
                f"{PLAUSIBLE_MPP[0]}-{PLAUSIBLE_MPP[1]} µm/px. Give the level-0 resolution in "
                "microns per pixel (e.g. 0.25 for 40x, 0.5 for 20x)."
            )
        return MppInfo(float(sheet_mpp), float(sheet_mpp), "sheet")
    pair = _pair(props, "openslide.mpp-x", "openslide.mpp-y")
    if pair:
        return MppInfo(*pair, "openslide.mpp")
    for key_x, key_y in VENDOR_MPP_KEYS:
        pair = _pair(props, key_x, key_y)
        if pair:
            return MppInfo(*pair, f"vendor:{key_x}")
    pair = _from_tiff_resolution(props)
    if pair:
        return MppInfo(*pair, "tiff.resolution")
    raise MissingMppError(
        f"Slide '{slide}': no resolution (mpp) found in its metadata (checked openslide.mpp-x/y, "
        f"vendor keys {', '.join(k for k, _ in VENDOR_MPP_KEYS)}, and TIFF resolution with an inch or "
        "centimeter unit). magflow does not guess. Add the level-0 microns per pixel to the `mpp` "
        "column of the slide sheet for this slide (e.g. 0.25 for 40x, 0.5 for 20x)."
    )
