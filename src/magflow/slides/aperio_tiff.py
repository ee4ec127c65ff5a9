"""Write an RGB image as a pyramidal, JPEG-tiled, Aperio-style TIFF that OpenSlide opens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

TILE = 256
BIGTIFF_BYTES = 2**31 - 2**26  # classic TIFF offsets are 32-bit; keep a margin for tags


def downsample_2x(image: np.ndarray) -> np.ndarray:
    """Halve both sides by averaging 2x2 blocks (an odd side repeats its last row/column)."""
    if image.shape[0] % 2 or image.shape[1] % 2:
        pad = [(0, image.shape[0] % 2), (0, image.shape[1] % 2)] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pad, mode="edge")
    total = image[0::2, 0::2].astype(np.uint16) + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def pyramid(level0: np.ndarray, min_side: int = 512, min_levels: int = 4) -> list[np.ndarray]:
    """Levels halving by area averaging until the shorter side is below ``min_side``,
    and never fewer than ``min_levels``."""
    levels = [level0]
    while min(levels[-1].shape[:2]) >= min_side or len(levels) < min_levels:
        levels.append(downsample_2x(levels[-1]))
    return levels


def aperio_description(width: int, height: int, jpeg_quality: int, app_mag: float, mpp: float | None) -> str:
    """The ImageDescription that makes OpenSlide read the file as Aperio; no ``MPP`` field if mpp is None."""
    text = (f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] "
            f"({TILE}x{TILE}) JPEG/RGB Q={jpeg_quality}|AppMag = {app_mag:g}")
    return text if mpp is None else f"{text}|MPP = {mpp:g}"


def write_aperio_tiff(
    path: Path, levels: list[np.ndarray], jpeg_quality: int, app_mag: float, mpp: float | None
) -> None:
    """Write ``levels`` (level 0 first) as 256 px JPEG tiles; BigTIFF when the raw size could pass 2 GB.

    With ``mpp`` the TIFF resolution tags also say ``1e4 / mpp`` pixels per centimetre (scaled
    per level). Without it tifffile's default stays: XResolution = YResolution = 1/1 with
    ResolutionUnit NONE (1), which carries no physical size.
    """
    height, width = levels[0].shape[:2]
    description = aperio_description(width, height, jpeg_quality, app_mag, mpp)
    bigtiff = sum(level.nbytes for level in levels) > BIGTIFF_BYTES
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for index, level in enumerate(levels):
            resolution = {}
            if mpp is not None:
                per_cm = 1e4 / (mpp * width / level.shape[1])
                resolution = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
            tif.write(level, tile=(TILE, TILE), compression="jpeg", compressionargs={"level": jpeg_quality},
                      photometric="rgb", description=description if index == 0 else None, metadata=None,
                      **resolution)
