"""Open a whole-slide image with OpenSlide and read regions at a physical resolution (mpp)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import openslide
from PIL import Image

from magflow.errors import SlideError, UpsamplingError
from magflow.slides.diagnose import explain_open_failure
from magflow.slides.mpp import MppInfo, resolve_mpp

INTERPOLATIONS = {
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class Level:
    index: int
    downsample: float
    mpp: float
    width: int
    height: int


@dataclass(frozen=True)
class ReadPlan:
    """How a target mpp is served: from which level, by what factor, and the mpp actually achieved."""

    level: int
    level_mpp: float
    scale: float  # level pixels per output pixel; 1.0 means a native read
    achieved_mpp: float


def slide_identity(path: str | os.PathLike[str]) -> dict[str, object]:
    """A cheap fingerprint: file size and sha256 of the first MiB."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    return {"size_bytes": path.stat().st_size, "sha256_first_mib": hashlib.sha256(head).hexdigest()}


def plan_read(levels: list[Level], target_mpp: float, slide: str,
              tolerance: float = DEFAULT_TOLERANCE) -> ReadPlan:
    """Pick the level with the largest downsample that is at or finer than ``target_mpp``.

    A level within ``tolerance`` (relative) of the target is read natively, so its achieved mpp is
    the level's own. A target finer than level 0 beyond the tolerance is refused: no upsampling.
    """
    if target_mpp <= 0 or not math.isfinite(target_mpp):
        raise UpsamplingError(f"Slide '{slide}': target mpp must be a positive number, got {target_mpp}.")
    base = levels[0].mpp
    if target_mpp < base * (1.0 - tolerance):
        raise UpsamplingError(
            f"Slide '{slide}': target {target_mpp:g} mpp is finer than the slide's native "
            f"{base:g} mpp (tolerance {tolerance:.0%}); magflow never upsamples. Drop this scale "
            "for this slide, or use a slide scanned at a higher magnification."
        )
    usable = [lv for lv in levels if lv.mpp <= target_mpp * (1.0 + tolerance)]
    level = max(usable, key=lambda lv: lv.downsample)
    if abs(level.mpp / target_mpp - 1.0) <= tolerance:
        return ReadPlan(level.index, level.mpp, 1.0, level.mpp)
    return ReadPlan(level.index, level.mpp, target_mpp / level.mpp, target_mpp)


def _rgba_to_rgb_on_white(image: Image.Image) -> np.ndarray:
    """OpenSlide returns transparent pixels outside the scanned area; show them as glass (white)."""
    rgba = np.asarray(image)
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.rint(rgb).astype(np.uint8)


class Slide:
    """An opened WSI with a trustworthy mpp. Use as a context manager, or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str], slide_id: str | None = None,
                 sheet_mpp: float | None = None, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.path = Path(path)
        self.slide_id = slide_id or self.path.stem
        self.tolerance = tolerance
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as error:
            raise SlideError(explain_open_failure(self.path, self.slide_id)) from error
        self.properties: dict[str, str] = dict(self._osr.properties)
        self.mpp_info: MppInfo = resolve_mpp(self.properties, self.slide_id, sheet_mpp)
        base = self.mpp_info.mpp
        self.levels = [
            Level(i, float(ds), base * float(ds), int(w), int(h))
            for i, (ds, (w, h)) in enumerate(zip(self._osr.level_downsamples, self._osr.level_dimensions))
        ]

    # -- basic facts -------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        return self.mpp_info.mpp

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.levels[0].width, self.levels[0].height

    @property
    def vendor(self) -> str:
        return self.properties.get("openslide.vendor", "unknown")

    def metadata_mpp(self) -> MppInfo | None:
        """The mpp the file's own metadata gives, ignoring the sheet (None when it has none)."""
        try:
            return resolve_mpp(self.properties, self.slide_id)
        except SlideError:
            return None

    def describe(self) -> dict[str, object]:
        """A JSON-ready summary for provenance records."""
        meta = self.metadata_mpp()
        return {
            "slide_id": self.slide_id,
            "path": str(self.path),
            "vendor": self.vendor,
            "mpp": self.mpp,
            "mpp_x": self.mpp_info.mpp_x,
            "mpp_y": self.mpp_info.mpp_y,
            "mpp_source": self.mpp_info.source,
            "metadata_mpp": meta.mpp if meta else None,
            "dimensions": list(self.dimensions),
            "levels": [[lv.downsample, lv.mpp, lv.width, lv.height] for lv in self.levels],
            **slide_identity(self.path),
        }

    # -- reading -----------------------------------------------------------------------------
    def plan(self, target_mpp: float) -> ReadPlan:
        return plan_read(self.levels, target_mpp, self.slide_id, self.tolerance)

    def read_level(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Read ``width``×``height`` level pixels whose top-left is (x0, y0) in level-0 pixels."""
        try:
            image = self._osr.read_region((int(x0), int(y0)), level, (int(width), int(height)))
        except openslide.OpenSlideError as error:
            raise SlideError(
                f"Slide '{self.slide_id}' ({self.path}): OpenSlide failed to decode the region at "
                f"level {level}, ({x0}, {y0}) size {width}x{height}: {error}. The file is probably "
                "corrupt or truncated; re-copy or re-export it, or drop it from the slide sheet."
            ) from error
        return _rgba_to_rgb_on_white(image)

    def read_region(self, x0: float, y0: float, width: int, height: int, target_mpp: float,
                    interpolation: str = "area") -> tuple[np.ndarray, float]:
        """Read a ``width``×``height`` patch at ``target_mpp`` with level-0 top-left (x0, y0).

        Returns the RGB uint8 array and the achieved mpp.
        """
        plan = self.plan(target_mpp)
        level = self.levels[plan.level]
        if plan.scale == 1.0:
            return self.read_level(plan.level, round(x0), round(y0), width, height), plan.achieved_mpp
        # Fractional window in level pixels, read on an integer grid, resampled with a float box.
        lx, ly = x0 / level.downsample, y0 / level.downsample
        lw, lh = width * plan.scale, height * plan.scale
        ix0, iy0 = math.floor(lx), math.floor(ly)
        ix1, iy1 = math.ceil(lx + lw), math.ceil(ly + lh)
        pixels = self.read_level(plan.level, round(ix0 * level.downsample), round(iy0 * level.downsample),
                                 ix1 - ix0, iy1 - iy0)
        box = (lx - ix0, ly - iy0, lx - ix0 + lw, ly - iy0 + lh)
        resized = Image.fromarray(pixels).resize((width, height), INTERPOLATIONS[interpolation], box=box)
        return np.asarray(resized), plan.achieved_mpp

    def read_downsampled(self, target_mpp: float, block_level_px: int = 4096,
                         interpolation: str = "area") -> tuple[np.ndarray, float]:
        """The whole slide at a coarse ``target_mpp``, read block by block to bound memory.

        Works for single-level slides too (a streaming downsample of level 0).
        """
        plan = self.plan(target_mpp)
        width0, height0 = self.dimensions
        out_w = max(1, math.floor(width0 * self.mpp / plan.achieved_mpp))
        out_h = max(1, math.floor(height0 * self.mpp / plan.achieved_mpp))
        block = max(1, int(block_level_px / plan.scale))
        out = np.empty((out_h, out_w, 3), np.uint8)
        step0 = plan.achieved_mpp / self.mpp  # level-0 pixels per output pixel
        for oy in range(0, out_h, block):
            for ox in range(0, out_w, block):
                bw, bh = min(block, out_w - ox), min(block, out_h - oy)
                patch, _ = self.read_region(ox * step0, oy * step0, bw, bh, plan.achieved_mpp, interpolation)
                out[oy:oy + bh, ox:ox + bw] = patch
        return out, plan.achieved_mpp

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
