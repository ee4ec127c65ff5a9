"""The slide QC table: one row per slide with its mpp, where it came from, and its tissue."""

from __future__ import annotations

import csv
import html
import os
from collections.abc import Sequence

from magflow.atomic import atomic_path
from magflow.preprocess.mask_store import mask_summary
from magflow.report.html import page, table


def write_slide_table(mask_paths: Sequence[str | os.PathLike[str]], tsv_path: str | os.PathLike[str],
                      html_path: str | os.PathLike[str]) -> list[dict[str, object]]:
    rows = [mask_summary(path) for path in mask_paths]
    with atomic_path(tsv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["slide_id"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    flagged = sum(1 for row in rows if row["warnings"])
    refused = [str(row["slide_id"]) for row in rows if row.get("status") == "refused"]
    intro = (f"<p>{len(rows)} slides; {flagged} with warnings (highlighted). mpp_source tells which link "
             "of the mpp chain gave each slide's resolution: sheet, openslide.mpp, vendor:&lt;key&gt; or "
             "tiff.resolution; reader is openslide, or plain-image for a PNG, JPEG or strip TIFF read "
             "with the sheet's mpp.</p>")
    if refused:
        intro += (f"<p><b>Refused as not brightfield ({len(refused)}): {html.escape(', '.join(refused))}.</b> "
                  "Their tiles are not extracted; the warnings column says what was measured. Set "
                  "<code>brightfield_check</code> to <code>off</code> in a slide's sheet row to accept it "
                  "deliberately.</p>")
    with atomic_path(html_path) as tmp:
        tmp.write_text(page("magflow - slides", intro, table(rows, "Slides and tissue", warn_key="warnings")))
    return rows
