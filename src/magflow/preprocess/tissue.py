"""Deterministic tissue detection: saturation threshold (Otsu, with a floor) and µm-sized morphology.

It is made for brightfield stains (H&E): bright glass, coloured tissue. A scan with a dark background
(fluorescence, dark-field), or one whose "tissue" covers nearly all of it, breaks that assumption; its
measured values are checked by :func:`brightfield_problems` so such a slide can be refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from magflow.defaults import schema_defaults
from magflow.slides.reader import Slide


@dataclass(frozen=True)
@schema_defaults("tissue")
class TissueParams:
    """Every size is physical (µm or µm²), so a mask means the same thing at any slide resolution."""

    mpp: float                       # resolution the mask is computed at
    min_saturation: float            # floor on the Otsu threshold (0-1): glass alone never becomes tissue
    smooth_um: float                 # median filter width on the saturation image
    close_um: float                  # closing radius that bridges small gaps inside tissue
    min_tissue_um2: float            # connected components smaller than this are specks, removed
    max_hole_um2: float              # holes smaller than this are filled; larger ones (lumens, tears) kept
    min_brightness: float            # median brightness (0-255) below this: a dark background, not brightfield
    max_fraction: float              # tissue over more than this fraction of the scan is not believed


@dataclass
class TissueMask:
    mask: np.ndarray  # bool, H×W at ``mpp``
    mpp: float
    threshold: float
    warnings: list[str] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)
    brightness: float = float("nan")  # median brightness (luma, 0-255) of the image the mask was made from
    refused: str = ""  # why the slide is refused ("" when it is not); set by the mask step

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of a uint8 RGB image: (max - min) / max, 0 on black."""
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold on values in [0, 1]: the bin edge maximising between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    weights = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    mu0 = np.cumsum(weights * centers) / np.maximum(w0, 1e-12)
    mu1 = (np.sum(weights * centers) - np.cumsum(weights * centers)) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[1:][int(np.argmax(between))])


def median_brightness(rgb: np.ndarray) -> float:
    """Median luma (ITU-R 601, 0-255) of a uint8 RGB image: glass is ~240 on a brightfield scan."""
    if not rgb.size:
        return float("nan")
    luma = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.median(luma))


def brightfield_problems(result: TissueMask, params: TissueParams) -> list[str]:
    """What makes ``result`` look unlike a brightfield scan, each with the value measured; [] when nothing."""
    problems = []
    if result.brightness < params.min_brightness:
        problems.append(f"its median brightness is {result.brightness:.0f} of 255, below tissue.min_brightness "
                        f"{params.min_brightness:g}: a dark background, as in fluorescence or dark-field")
    if result.tissue_fraction > params.max_fraction:
        problems.append(f"the tissue mask covers {result.tissue_fraction:.1%} of the scan, above "
                        f"tissue.max_fraction {params.max_fraction:g}: the background was taken for tissue")
    return problems


def _disk(radius_px: int) -> np.ndarray:
    y, x = np.ogrid[-radius_px:radius_px + 1, -radius_px:radius_px + 1]
    return x * x + y * y <= radius_px * radius_px


def detect_tissue(rgb: np.ndarray, mpp: float, params: TissueParams) -> TissueMask:
    """Tissue mask of an RGB image at ``mpp`` µm/px."""
    sat = saturation(rgb)
    smooth_px = max(1, int(round(params.smooth_um / mpp)) | 1)
    sat = ndimage.median_filter(sat, size=smooth_px, mode="nearest")
    threshold = max(otsu_threshold(sat), params.min_saturation)
    mask = sat > threshold
    close_px = int(round(params.close_um / mpp))
    if close_px > 0:
        # Pad so closing does not erode tissue that touches the slide border.
        padded = np.pad(mask, close_px, mode="edge")
        mask = ndimage.binary_closing(padded, structure=_disk(close_px))[close_px:-close_px, close_px:-close_px]
    pixel_area = mpp * mpp
    mask = _remove_small(mask, params.min_tissue_um2 / pixel_area)
    holes = ndimage.binary_fill_holes(mask) & ~mask
    mask = mask | _remove_large(holes, params.max_hole_um2 / pixel_area)
    warnings = []
    if not mask.any():
        warnings.append("no tissue detected: the mask is empty (blank slide, or thresholds too strict: "
                        "lower tissue.min_saturation / tissue.min_tissue_um2)")
    return TissueMask(mask, mpp, threshold, warnings, asdict(params), median_brightness(rgb))


def _component_sizes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels, sizes


def _remove_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    labels, sizes = _component_sizes(mask)
    return (sizes >= min_px)[labels] & mask


def _remove_large(mask: np.ndarray, max_px: float) -> np.ndarray:
    labels, sizes = _component_sizes(mask)
    return (sizes < max_px)[labels] & mask


def slide_tissue_mask(slide: Slide, params: TissueParams) -> tuple[TissueMask, np.ndarray]:
    """The tissue mask of a slide and the thumbnail it was computed from.

    The slide is read at ``params.mpp`` from the best pyramid level, or by a streaming downsample
    of level 0 for single-level slides.
    """
    target = max(params.mpp, slide.mpp)
    thumb, achieved = slide.read_downsampled(target)
    return detect_tissue(thumb, achieved, params), thumb
