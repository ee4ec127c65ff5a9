"""Open a whole-slide image with OpenSlide and read regions at a physical resolution (mpp).

A plain image (PNG, JPEG, strip TIFF) with its mpp in the slide sheet is read as a one-level slide
(``plain_image``); everything else goes through OpenSlide.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import openslide
from PIL import Image

from magflow.defaults import default
from magflow.errors import SlideError, UpsamplingError
from magflow.slides.diagnose import explain_open_failure, plain_image_format
from magflow.slides.mpp import MppInfo, resolve_mpp
from magflow.slides.plain_image import open_plain_image
from magflow.slides.tiff_tiles import TiffTileDecoder

Rects = list[tuple[int, int, int, int]]
INTERPOLATIONS = {
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}
DEFAULT_TOLERANCE = default("read.upsample_tolerance")
# a plain image is decoded whole: 400 Mpx (20k x 20k) is 1.2 GB as RGB
DEFAULT_MAX_PLAIN_MEGAPIXELS = float(default("read.max_plain_image_megapixels"))
FAST_VENDORS = ("aperio", "generic-tiff")
# The direct tile decoder must reproduce OpenSlide's pixels; libjpeg builds may differ by an IDCT rounding.
FAST_MAX_ABS_DIFF, FAST_MEAN_ABS_DIFF = 8, 0.5


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
    """An opened WSI with a trustworthy mpp. Use as a context manager, or call ``close()``.

    ``reader`` says what opened it: ``openslide``, or ``plain-image`` for a PNG, JPEG or strip TIFF
    decoded whole with Pillow (only with ``sheet_mpp``, and up to ``max_plain_megapixels``).
    """

    def __init__(self, path: str | os.PathLike[str], slide_id: str | None = None,
                 sheet_mpp: float | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 fast_decode: bool = True, max_plain_megapixels: float = DEFAULT_MAX_PLAIN_MEGAPIXELS) -> None:
        self.path = Path(path)
        self.slide_id = slide_id or self.path.stem
        self.tolerance = tolerance
        self._fast_wanted = fast_decode
        self._fast: TiffTileDecoder | None = None
        self._pool: tuple[Executor, int] | None = None
        self._image: Image.Image | None = None
        self._vendor: str | None = None
        self.decoder = self.reader = "openslide"
        self._osr: openslide.AbstractSlide
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as error:
            kind = plain_image_format(self.path)
            if kind is None:
                raise SlideError(explain_open_failure(self.path, self.slide_id)) from error
            self._osr, self._image = open_plain_image(self.path, self.slide_id, kind, sheet_mpp,
                                                      max_plain_megapixels)
            self.decoder, self.reader, self._vendor = "pillow", "plain-image", f"plain {kind}"
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
        return self._vendor or self.properties.get("openslide.vendor", "unknown")

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
            "reader": self.reader,
            "decoder": self.decoder,
            "levels": [[lv.downsample, lv.mpp, lv.width, lv.height] for lv in self.levels],
            **slide_identity(self.path),
        }

    # -- reading -----------------------------------------------------------------------------
    def plan(self, target_mpp: float) -> ReadPlan:
        return plan_read(self.levels, target_mpp, self.slide_id, self.tolerance)

    def enable_fast_decode(self) -> bool:
        """Switch to direct TIFF tile decoding if it reproduces OpenSlide's pixels on this slide.

        The spot check compares a central region of level 0 and the whole smallest level.
        """
        if self._fast is not None or not self._fast_wanted or self.vendor not in FAST_VENDORS:
            return self._fast is not None
        try:
            decoder = TiffTileDecoder(self.path, [(lv.width, lv.height) for lv in self.levels])
        except Exception:  # noqa: BLE001 - any layout tifffile cannot map: stay on OpenSlide
            return False
        last = self.levels[-1]
        w0, h0 = min(128, self.levels[0].width), min(128, self.levels[0].height)
        x0, y0 = (self.levels[0].width - w0) // 2, (self.levels[0].height - h0) // 2
        checks = [(0, x0, y0, w0, h0)]
        if last.index:
            checks.append((last.index, 0, 0, min(last.width, 128), min(last.height, 128)))
        try:
            for level, x, y, w, h in checks:
                ds = self.levels[level].downsample
                reference = self._read_openslide(level, round(x * ds), round(y * ds), w, h)
                diff = np.abs(decoder.read(level, x, y, w, h).astype(np.int16) - reference)
                if diff.max() > FAST_MAX_ABS_DIFF or diff.mean() > FAST_MEAN_ABS_DIFF:
                    raise ValueError("pixels differ from OpenSlide")
        except Exception:  # noqa: BLE001 - a failed spot check means: use OpenSlide
            decoder.close()
            return False
        self._fast, self.decoder = decoder, "tifffile"
        return True

    def decode_on(self, pool: Executor | None, threads: int) -> None:
        """Let direct-decoder reads spread their stored tiles over ``threads`` threads of ``pool``
        (None: decode on the calling thread). Pixels do not change; OpenSlide reads stay serial."""
        self._pool = (pool, threads) if pool is not None and threads > 1 else None

    def _read_error(self, level: int, x0: int, y0: int, width: int, height: int, error: Exception) -> SlideError:
        return SlideError(
            f"Slide '{self.slide_id}' ({self.path}): failed to decode the region at level {level}, "
            f"({x0}, {y0}) size {width}x{height}: {error}. The file is damaged or truncated (corrupt "
            "image data); re-copy or re-export it, or drop it from the slide sheet."
        )

    def _read_openslide(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        try:
            image = self._osr.read_region((int(x0), int(y0)), level, (int(width), int(height)))
        except openslide.OpenSlideError as error:
            raise self._read_error(level, x0, y0, width, height, error) from error
        return _rgba_to_rgb_on_white(image)

    def read_level(self, level: int, x0: int, y0: int, width: int, height: int,
                   needed: Rects | None = None) -> np.ndarray:
        """Read ``width``×``height`` level pixels whose top-left is (x0, y0) in level-0 pixels.

        ``needed`` (rectangles in level pixels relative to the region) lets the direct decoder skip
        stored tiles no rectangle touches; pixels outside every rectangle are then undefined (white).
        """
        if self._fast is None:
            return self._read_openslide(level, x0, y0, width, height)
        ds = self.levels[level].downsample
        try:
            pool, threads = self._pool or (None, 1)
            return self._fast.read(level, round(x0 / ds), round(y0 / ds), int(width), int(height), needed,
                                   pool, threads)
        except Exception as error:  # noqa: BLE001 - any decode failure is a damaged slide
            raise self._read_error(level, x0, y0, width, height, error) from error

    def read_region(self, x0: float, y0: float, width: int, height: int, target_mpp: float,
                    interpolation: str = "area", needed: Rects | None = None) -> tuple[np.ndarray, float]:
        """Read a ``width``×``height`` patch at ``target_mpp`` with level-0 top-left (x0, y0).

        Returns the RGB uint8 array and the achieved mpp. ``needed`` (rectangles in output pixels)
        marks the only parts the caller will use, so a native read can skip the rest.
        """
        plan = self.plan(target_mpp)
        level = self.levels[plan.level]
        if plan.scale == 1.0:
            return self.read_level(plan.level, round(x0), round(y0), width, height, needed), plan.achieved_mpp
        lx, ly = x0 / level.downsample, y0 / level.downsample
        whole = round(plan.scale)
        if interpolation == "area" and abs(plan.scale - whole) < 1e-9 and lx.is_integer() and ly.is_integer():
            # Whole factor on whole pixels: an exact k×k box average, much faster than a general resize.
            scaled = None if needed is None else [tuple(v * whole for v in rect) for rect in needed]
            pixels = self.read_level(plan.level, round(x0), round(y0), width * whole, height * whole, scaled)
            return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA), plan.achieved_mpp
        # Fractional window in level pixels, read on an integer grid, resampled with a float box.
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
        if self._fast is not None:
            self._fast.close()
        self._osr.close()
        if self._image is not None:
            self._image.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
