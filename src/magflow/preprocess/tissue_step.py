"""The `tissue_mask` step: one slide in, its mask (HDF5) and QC picture out."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from magflow import provenance
from magflow.preprocess.mask_store import write_mask
from magflow.preprocess.tissue import TissueMask, TissueParams, slide_tissue_mask
from magflow.report.tissue_qc import plot_tissue_qc
from magflow.slides.reader import DEFAULT_TOLERANCE, Slide

log = logging.getLogger(__name__)


def make_tissue_mask(slide_path: str | os.PathLike[str], slide_id: str, mask_path: str | os.PathLike[str],
                     qc_path: str | os.PathLike[str], params: TissueParams, sheet_mpp: float | None = None,
                     tolerance: float = DEFAULT_TOLERANCE,
                     config: Mapping[str, Any] | None = None) -> TissueMask:
    """Compute a slide's tissue mask and write the mask file and its QC PNG."""
    with Slide(slide_path, slide_id, sheet_mpp, tolerance) as slide:
        log.info("%s: %s, %dx%d px, %d levels, %.4g mpp from %s", slide_id, slide.vendor,
                 *slide.dimensions, len(slide.levels), slide.mpp, slide.mpp_info.source)
        meta = slide.metadata_mpp()
        if slide.mpp_info.source == "sheet" and meta and abs(meta.mpp / slide.mpp - 1) > 0.05:
            log.warning("%s: the sheet's mpp %.4g overrides the file's %.4g (%s)", slide_id, slide.mpp,
                        meta.mpp, meta.source)
        result, thumbnail = slide_tissue_mask(slide, params)
        description = slide.describe()
    for warning in result.warnings:
        log.warning("%s: %s", slide_id, warning)
    log.info("%s: tissue fraction %.3f at %.3g µm/px (threshold %.3f)", slide_id, result.tissue_fraction,
             result.mpp, result.threshold)
    record = provenance.collect(config=config, precision="uint8 mask", tissue_params=result.params)
    plot_tissue_qc(qc_path, thumbnail, result, f"{slide_id} ({description['vendor']}, "
                   f"{description['mpp']:.3g} mpp from {description['mpp_source']})")
    write_mask(mask_path, result, description, record)
    return result
