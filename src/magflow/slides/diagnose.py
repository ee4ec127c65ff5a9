"""Say why a file cannot be opened as a slide, in a message a user can act on, and spot plain images.

OpenSlide's own error ("Unsupported or missing image file") does not tell a damaged copy from an
unsupported format. Here a file is sorted into: missing, empty, damaged or truncated, a plain image
(PNG, JPEG, strip-based TIFF: read by ``plain_image``), or a format magflow does not read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openslide
import tifffile

SUPPORTED = ".svs .tif .tiff .ndpi .vms .vmu .scn .mrxs .svslide .bif .dcm .czi"
PLAIN = ".png .jpg .jpeg .tif .tiff (strips)"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PLAIN_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
_DAMAGED_FIX = "Re-copy it from its source (or re-export it), or drop it from the slide sheet."


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """The warnings tifffile logs while parsing (e.g. an IFD offset past the end of the file),
    collected instead of printed: tifffile does not raise on them."""
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _magic(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(8)


def tiff_damage(path: Path) -> str | None:
    """Why a TIFF's structure is damaged or truncated, or None when it parses whole."""
    size = path.stat().st_size
    with _tifffile_warnings() as warnings:
        try:
            with tifffile.TiffFile(path) as tif:
                pages = list(tif.pages)
                ends = [int(o) + int(c) for p in pages for o, c in zip(p.dataoffsets, p.databytecounts)]
        except Exception as error:  # noqa: BLE001 - any parse failure means the same thing to the user
            warnings.append(f"{type(error).__name__}: {error}")
            pages, ends = [], []
    if warnings or not pages:
        detail = re.sub(r"^<[^>]*>\s*", "", warnings[0]) if warnings else "no image directory"
        return f"its TIFF structure is broken ({detail})"
    if ends and max(ends) > size:
        return f"its TIFF directory points {max(ends) - size} bytes past the end of the file"
    return None


def plain_image_format(path: Path) -> str | None:
    """'PNG', 'JPEG' or 'TIFF' (a strip-based, non-tiled TIFF whose structure is whole) when ``path`` is
    a plain image that magflow reads with Pillow; None otherwise (including a damaged TIFF)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    magic = _magic(path)
    for prefix, name in _PLAIN_MAGIC.items():
        if magic.startswith(prefix):
            return name
    if magic[:4] in _TIFF_MAGIC and tiff_damage(path) is None:
        with tifffile.TiffFile(path) as tif:
            return None if tif.pages[0].is_tiled else "TIFF"
    return None


def damaged(where: str, why: str) -> str:
    return f"{where}: the file is damaged or truncated (a corrupt or incomplete copy): {why}. {_DAMAGED_FIX}"


def explain_open_failure(path: Path, slide: str) -> str:
    """Why ``path`` cannot be opened as a WSI, and what to do about it."""
    where = f"Slide '{slide}' ({path})"
    if not path.exists():
        return (f"{where}: file not found. Fix the `path` column of the slide sheet (relative paths "
                "are resolved from the directory snakemake runs in).")
    if path.is_dir():
        return f"{where}: is a directory, not a slide file. For MIRAX give the .mrxs file itself."
    if path.stat().st_size == 0:
        return f"{where}: the file is empty (0 bytes). Re-copy it from its source."
    if _magic(path)[:4] in _TIFF_MAGIC:
        return _explain_tiff(path, where)
    vendor = openslide.OpenSlide.detect_format(str(path))
    if vendor:
        return damaged(where, f"recognised as {vendor}, but OpenSlide could not open it")
    suffix = path.suffix.lower()
    if suffix and suffix in SUPPORTED.split():
        return damaged(where, f"its contents are not those of a {suffix} slide (the file may be cut short)")
    return (f"{where}: not a format magflow reads: whole-slide images ({SUPPORTED}) or plain images "
            f"({PLAIN}) with their mpp in the slide sheet. Convert it to a tiled, pyramidal TIFF (e.g. "
            "`vips tiffsave in out.tif --tile --pyramid --compression jpeg`) or drop it from the slide sheet.")


def _explain_tiff(path: Path, where: str) -> str:
    why = tiff_damage(path)
    if why:
        return damaged(where, why)
    return (f"{where}: a tiled TIFF that OpenSlide cannot read (unsupported compression or layout, or "
            "damaged tile data). Re-export it as a JPEG-compressed tiled pyramidal TIFF (e.g. `vips tiffsave "
            "in out.tif --tile --pyramid --compression jpeg`).")
