"""Open a plain image (PNG, JPEG, strip-based TIFF) as a single-level slide.

Region crops (e.g. the BRACS benchmark) come as plain images with no trustworthy resolution, so the
slide sheet must give their mpp. The whole image is decoded once with Pillow at open, which finds a
damaged or truncated file before any output is written, and is served through OpenSlide's own
``ImageSlide`` wrapper, so every read goes through the same code as a whole-slide image. Decoding
holds the whole image in memory (3 bytes a pixel), hence the size limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openslide
from PIL import Image

from magflow.errors import MissingMppError, SlideError
from magflow.slides.diagnose import damaged

_KEEP = ("RGB", "RGBA")
_TO_RGBA = ("LA", "PA", "La")
_TO_RGB = ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV")
PYRAMID_HINT = ("`vips tiffsave in out.tif --tile --pyramid --compression jpeg --xres X --yres X` "
                "(X = 1000 / mpp pixels per mm)")


@contextmanager
def _no_bomb_check() -> Iterator[None]:
    """Pillow refuses images above ~179 Mpx as decompression bombs; the caller has checked the size."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def open_plain_image(path: Path, slide: str, kind: str, sheet_mpp: float | None,
                     max_megapixels: float) -> tuple[openslide.ImageSlide, Image.Image]:
    """The decoded image wrapped as a one-level OpenSlide-like slide, and the image (to close).

    Refused, naming the slide: without a sheet mpp, above ``max_megapixels``, in a pixel mode that is
    not 8-bit colour or grey, or when decoding fails (damaged or truncated).
    """
    where = f"Slide '{slide}' ({path})"
    if sheet_mpp is None:
        raise MissingMppError(
            f"{where}: a plain {kind} image carries no trustworthy resolution, so magflow reads it only "
            "with its mpp from the slide sheet. Fill the `mpp` column of this slide's row with the "
            "image's microns per pixel (e.g. 0.25 for 40x, 0.5 for 20x).")
    try:
        with _no_bomb_check():
            image = Image.open(path)
    except Exception as error:  # noqa: BLE001 - a header Pillow cannot read is a damaged file
        raise SlideError(damaged(where, f"Pillow cannot read its {kind} header ({error})")) from error
    width, height = image.size
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        image.close()
        raise SlideError(
            f"{where}: a plain {kind} image of {width}x{height} px ({megapixels:.3g} megapixels) is above "
            f"read.max_plain_image_megapixels ({max_megapixels:g}): it would be decoded whole into "
            f"memory (about {megapixels * 3 / 1000:.2g} GB as RGB). Convert it to a tiled pyramidal TIFF, which is read "
            f"region by region, e.g. {PYRAMID_HINT}, or raise the limit in the config.")
    try:
        with _no_bomb_check():
            image.load()
    except Exception as error:  # noqa: BLE001 - any decode failure means the same thing to the user
        image.close()
        raise SlideError(damaged(where, f"decoding the {kind} image failed ({error})")) from error
    if image.mode not in _KEEP + _TO_RGBA + _TO_RGB:
        mode = image.mode
        image.close()
        raise SlideError(
            f"{where}: a {mode} {kind} image; magflow reads plain images with 8-bit RGB, RGBA or grey "
            f"pixels. Save it as 8-bit RGB (e.g. `vips cast in out.png uchar`), or as a tiled pyramidal "
            f"TIFF: {PYRAMID_HINT}.")
    if image.mode not in _KEEP:
        converted = image.convert("RGBA" if image.mode in _TO_RGBA else "RGB")
        image.close()
        image = converted
    return openslide.ImageSlide(image), image
