"""BRACS-MS resampling: every mpp of a region image is made from its 0.25 mpp pixels.

The steps follow the BRACS-MS authors' dataset script (``bracs_create_multimag_dataset.py``):

1. a centre crop of ``int(tile_px * mpp / source_mpp)`` px (left/top offset ``(size - crop) // 2``);
2. a progressive downsample to ``tile_px``: the sizes halve with floor division, never below the
   target, so each step is at most 2x and the last one takes whatever is left;
3. each step blurs every channel of the uint8 image with ``scipy.ndimage.gaussian_filter``
   (σ = step factor / 2.5, ``mode="reflect"``, scipy's default truncation at 4 σ, result kept as
   uint8), then resizes with PIL bicubic.

A region smaller than the crop is refused: the authors skip such images, and so do the callers here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

SOURCE_MPP = 0.25
SIGMA_DIVISOR = 2.5  # σ = factor / 2.5: a little less blur than the Nyquist-motivated factor / 2


def crop_px(mpp: float, tile_px: int = 224, source_mpp: float = SOURCE_MPP) -> int:
    """Side in source px of the centre crop that becomes a ``tile_px`` image at ``mpp``."""
    return int(tile_px * (mpp / source_mpp))


def step_sizes(source_px: int, target_px: int) -> list[int]:
    """The sizes after each step of the progressive downsample (empty when nothing is to do)."""
    sizes, size = [], source_px
    while size > target_px:
        size = max(target_px, size // 2)
        sizes.append(size)
    return sizes


def blur_and_resize(image: np.ndarray, target_px: int) -> np.ndarray:
    """One step: Gaussian blur of σ = (source / target) / 2.5 per channel, then a bicubic resize."""
    source_px = image.shape[1]
    if source_px == target_px:
        return image
    sigma = (source_px / target_px) / SIGMA_DIVISOR
    # sigma 0 on the channel axis: each channel is filtered on its own, with uint8 in between passes
    blurred = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")
    resized = Image.fromarray(blurred).resize((target_px, target_px), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def progressive_downsample(image: np.ndarray, target_px: int) -> np.ndarray:
    """A square uint8 RGB image downsampled to ``target_px`` in steps of at most 2x."""
    for size in step_sizes(image.shape[1], target_px):
        image = blur_and_resize(image, size)
    return image


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"a {width}x{height} px region is smaller than the {size} px crop it needs")
    left, top = (width - size) // 2, (height - size) // 2
    return image[top:top + size, left:left + size]


def region_at_mpp(region: np.ndarray, mpp: float, tile_px: int = 224, source_mpp: float = SOURCE_MPP) -> np.ndarray:
    """The ``tile_px`` image at ``mpp`` made from a ``source_mpp`` region (uint8 RGB, H x W x 3)."""
    if region.ndim != 3 or region.shape[2] != 3 or region.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image (H x W x 3), got {region.dtype} {region.shape}")
    patch = centre_crop(region, crop_px(mpp, tile_px, source_mpp))
    return progressive_downsample(np.ascontiguousarray(patch), tile_px)


def min_region_px(mpps: Sequence[float], tile_px: int = 224, source_mpp: float = SOURCE_MPP) -> int:
    """The smallest source region that gives every mpp; smaller regions are left out of the benchmark."""
    return max(crop_px(m, tile_px, source_mpp) for m in mpps)
