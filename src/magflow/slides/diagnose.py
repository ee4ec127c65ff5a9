"""Turn OpenSlide's terse "Unsupported or missing image file" into a message a user can act on."""

from __future__ import annotations

from pathlib import Path

import openslide
import tifffile

SUPPORTED = ".svs .tif .tiff .ndpi .vms .vmu .scn .mrxs .svslide .bif .dcm .czi"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic in _TIFF_MAGIC:
        return _explain_tiff(path, where)
    vendor = openslide.OpenSlide.detect_format(str(path))
    if vendor:
        return (f"{where}: recognised as {vendor} but OpenSlide could not open it; the file is probably "
                "corrupt or incomplete. Re-copy or re-export it, or drop it from the slide sheet.")
    return (f"{where}: not a whole-slide image format OpenSlide supports ({SUPPORTED}). Convert it to a "
            "tiled, pyramidal TIFF (e.g. `vips tiffsave in out.tif --tile --pyramid --compression jpeg`) "
            "or drop it from the slide sheet.")


def _explain_tiff(path: Path, where: str) -> str:
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tiled = bool(getattr(page, "is_tiled", False))
            ends = [int(o) + int(c) for p in tif.pages for o, c in zip(p.dataoffsets, p.databytecounts)]
    except Exception as error:  # noqa: BLE001 - any parse failure means the same thing to the user
        return (f"{where}: the TIFF structure cannot be parsed ({type(error).__name__}: {error}); the file "
                "is corrupt or truncated. Re-copy or re-export it, or drop it from the slide sheet.")
    if ends and max(ends) > size:
        return (f"{where}: the file is truncated: its TIFF directory points {max(ends) - size} bytes past "
                "the end of the file (corrupt or truncated copy). Re-copy it, or drop it from the slide sheet.")
    if not tiled:
        return (f"{where}: a plain (strip-based) TIFF, not a tiled whole-slide image. Convert it to a "
                "tiled pyramidal TIFF (e.g. `vips tiffsave in.tif out.tif --tile --pyramid "
                "--compression jpeg`) and give its mpp in the slide sheet.")
    return (f"{where}: a tiled TIFF that OpenSlide cannot read (unsupported compression or layout, or "
            "damaged). Re-export it as a JPEG-compressed tiled pyramidal TIFF.")
