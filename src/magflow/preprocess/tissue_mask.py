"""The `tissue_mask` step: one slide in, its mask (HDF5) and QC picture out.

A slide that does not look like a brightfield scan (see ``tissue.brightfield_problems``) still gets
its mask file and QC picture, so it shows in the slide QC table, but the mask records the refusal
and tile extraction stops that slide with it. ``brightfield_check=False`` (the sheet's
``brightfield_check`` column set to ``off``) accepts such a slide deliberately.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from magflow import provenance
from magflow.preprocess.mask_store import write_mask
from magflow.preprocess.tissue import TissueMask, TissueParams, brightfield_problems, slide_tissue_mask
from magflow.preprocess.tissue_qc import plot_tissue_qc
from magflow.slides.reader import DEFAULT_MAX_PLAIN_MEGAPIXELS, DEFAULT_TOLERANCE, Slide

log = logging.getLogger(__name__)


def refusal_message(slide_id: str, result: TissueMask, problems: list[str]) -> str:
    """Why a slide is refused as not brightfield, with every value measured, and what to do."""
    return (f"Slide '{slide_id}' does not look like a brightfield scan: {'; and '.join(problems)} "
            f"(measured on the whole slide at {result.mpp:.3g} µm/px: tissue mask {result.tissue_fraction:.1%} "
            f"of the scan, Otsu threshold of saturation {result.threshold:.3f}). magflow's tissue detection is "
            "made for brightfield H&E, so its mask cannot be trusted here. Drop the slide from the slide sheet, "
            "or, to use it "
            "deliberately with this mask, set `brightfield_check` to `off` in its row of the sheet.")


def make_tissue_mask(slide_path: str | os.PathLike[str], slide_id: str, mask_path: str | os.PathLike[str],
                     qc_path: str | os.PathLike[str], params: TissueParams, sheet_mpp: float | None = None,
                     tolerance: float = DEFAULT_TOLERANCE,
                     config: Mapping[str, Any] | None = None, brightfield_check: bool = True,
                     max_plain_megapixels: float = DEFAULT_MAX_PLAIN_MEGAPIXELS) -> TissueMask:
    """Compute a slide's tissue mask and write the mask file and its QC PNG.

    A slide that fails the brightfield check comes back with ``refused`` set (and logged as an error)
    unless ``brightfield_check`` is False; then the problems are kept as a warning.
    """
    with Slide(slide_path, slide_id, sheet_mpp, tolerance, max_plain_megapixels=max_plain_megapixels) as slide:
        log.info("%s: %s, %dx%d px, %d levels, %.4g mpp from %s, read by %s", slide_id, slide.vendor,
                 *slide.dimensions, len(slide.levels), slide.mpp, slide.mpp_info.source, slide.reader)
        meta = slide.metadata_mpp()
        if slide.mpp_info.source == "sheet" and meta and abs(meta.mpp / slide.mpp - 1) > 0.05:
            log.warning("%s: the sheet's mpp %.4g overrides the file's %.4g (%s)", slide_id, slide.mpp,
                        meta.mpp, meta.source)
        result, thumbnail = slide_tissue_mask(slide, params)
        description = slide.describe()
    problems = brightfield_problems(result, params)
    if problems and brightfield_check:
        result.refused = refusal_message(slide_id, result, problems)
        log.error("%s", result.refused)
    elif problems:
        result.warnings.append("accepted with brightfield_check off although " + "; and ".join(problems))
    for warning in result.warnings:
        log.warning("%s: %s", slide_id, warning)
    log.info("%s: tissue fraction %.3f at %.3g µm/px (threshold %.3f, median brightness %.0f)", slide_id,
             result.tissue_fraction, result.mpp, result.threshold, result.brightness)
    record = provenance.collect(config=config, precision="uint8 mask", tissue_params=result.params)
    plot_tissue_qc(qc_path, thumbnail, result, f"{slide_id} ({description['vendor']}, "
                   f"{description['mpp']:.3g} mpp from {description['mpp_source']})")
    write_mask(mask_path, result, description, record)
    return result
