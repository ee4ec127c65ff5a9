"""Write small test WSIs with known pixels, in the metadata styles the mpp chain must handle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def pyramid(rgb: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [rgb]
    for _ in range(levels - 1):
        h, w = out[-1].shape[:2]
        out.append(np.asarray(Image.fromarray(out[-1]).resize((w // 2, h // 2), Image.Resampling.BOX)))
    return out


def write_wsi(path: Path, rgb: np.ndarray, mpp: float | None = 0.25, levels: int = 4,
              style: str = "aperio", compression: str = "jpeg") -> Path:
    """style: 'aperio' (MPP in the description), 'tiff-cm' / 'tiff-inch' (resolution tags only),
    or 'none' (no resolution anywhere). ``mpp=None`` with 'aperio' omits the MPP field."""
    h, w = rgb.shape[:2]
    kwargs: dict = {}
    if style == "aperio":
        desc = f"Aperio Image Library v12.0.0 \r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=95|AppMag = 40"
        if mpp is not None:
            desc += f"|MPP = {mpp}"
        kwargs["description"] = desc
    elif style == "tiff-cm":
        kwargs.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    elif style == "tiff-inch":
        kwargs.update(resolution=(25400 / mpp, 25400 / mpp), resolutionunit="INCH")
    comp = {"compression": "jpeg", "compressionargs": {"level": 95}} if compression == "jpeg" else {}
    with tifffile.TiffWriter(path) as tw:
        for i, level in enumerate(pyramid(rgb, levels)):
            extra = kwargs if i == 0 else {k: v for k, v in kwargs.items() if k != "description"}
            tw.write(level, tile=(256, 256), photometric="rgb", metadata=None, **comp, **extra)
    return path


def stripes(height: int, width: int, period_px: float, vertical: bool = True) -> np.ndarray:
    """A sinusoidal grating (H&E-ish colours) with the given period in level-0 pixels."""
    axis = np.arange(width if vertical else height)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * axis / period_px)
    line = np.stack([230 - 120 * wave, 180 - 140 * wave, 220 - 60 * wave], axis=-1)
    img = np.broadcast_to(line[None, :, :], (height, width, 3)) if vertical else \
        np.broadcast_to(line[:, None, :], (height, width, 3))
    return np.ascontiguousarray(img).astype(np.uint8)
