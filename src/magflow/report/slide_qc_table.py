"""The slide QC table: one row per slide with its mpp, where it came from, and its tissue."""

from __future__ import annotations

import os
from collections.abc import Sequence

from magflow.pages import escape, table, write_page
from magflow.preprocess.mask_store import mask_summary
from magflow.tsv import write_tsv


def write_slide_table(mask_paths: Sequence[str | os.PathLike[str]], tsv_path: str | os.PathLike[str],
                      html_path: str | os.PathLike[str]) -> list[dict[str, object]]:
    rows = [mask_summary(path) for path in mask_paths]
    write_tsv(tsv_path, rows, None if rows else ["slide_id"])
    flagged = sum(1 for row in rows if row["warnings"])
    refused = [str(row["slide_id"]) for row in rows if row.get("status") == "refused"]
    intro = (f"<p>{len(rows)} slides; {flagged} with warnings (highlighted). mpp_source tells which link "
             "of the mpp chain gave each slide's resolution: sheet, openslide.mpp, vendor:&lt;key&gt; or "
             "tiff.resolution; reader is openslide, or plain-image for a PNG, JPEG or strip TIFF read "
             "with the sheet's mpp.</p>")
    if refused:
        intro += (f"<p><b>Refused as not brightfield ({len(refused)}): {escape(', '.join(refused))}.</b> "
                  "Their tiles are not extracted; the warnings column says what was measured. Set "
                  "<code>brightfield_check</code> to <code>off</code> in a slide's sheet row to accept it "
                  "deliberately.</p>")
    write_page(html_path, "magflow - slides", intro, table(rows, "Slides and tissue", warn_key="warnings"))
    return rows
