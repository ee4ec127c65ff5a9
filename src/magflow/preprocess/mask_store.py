"""Save and load tissue masks as small HDF5 files that carry their resolution and provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from magflow.atomic import atomic_path
from magflow.preprocess.tissue import TissueMask


def write_mask(path: str | os.PathLike[str], result: TissueMask, slide: dict[str, Any],
               provenance: dict[str, Any]) -> None:
    """Write ``result`` with the slide description (``Slide.describe()``) and provenance."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("mask", data=result.mask.astype(np.uint8), compression="gzip")
        h5.attrs["mpp"] = result.mpp
        h5.attrs["threshold"] = result.threshold
        h5.attrs["tissue_fraction"] = result.tissue_fraction
        h5.attrs["warnings"] = json.dumps(result.warnings)
        h5.attrs["params"] = json.dumps(result.params)
        h5.attrs["brightness"] = result.brightness
        h5.attrs["refused"] = result.refused
        h5.attrs["slide"] = json.dumps(slide)
        h5.attrs["provenance"] = json.dumps(provenance, default=str)


def read_mask(path: str | os.PathLike[str]) -> tuple[TissueMask, dict[str, Any]]:
    """The mask and the slide description it was computed for."""
    with h5py.File(path, "r") as h5:
        result = TissueMask(
            mask=h5["mask"][...].astype(bool),
            mpp=float(h5.attrs["mpp"]),
            threshold=float(h5.attrs["threshold"]),
            warnings=json.loads(h5.attrs["warnings"]),
            params=json.loads(h5.attrs["params"]),
            brightness=float(h5.attrs.get("brightness", float("nan"))),
            refused=str(h5.attrs.get("refused", "")),
        )
        slide = json.loads(h5.attrs["slide"])
    return result, slide


def mask_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One row for the slide QC table."""
    result, slide = read_mask(path)
    return {
        "slide_id": slide["slide_id"],
        "mpp": slide["mpp"],
        "mpp_source": slide["mpp_source"],
        "vendor": slide["vendor"],
        "width_px": slide["dimensions"][0],
        "height_px": slide["dimensions"][1],
        "levels": len(slide["levels"]),
        "status": "refused" if result.refused else "ok",
        "reader": slide.get("reader", "openslide"),
        "tissue_fraction": round(result.tissue_fraction, 4),
        "tissue_area_mm2": round(float(result.mask.sum()) * result.mpp ** 2 / 1e6, 4),
        "brightness": round(result.brightness, 1),
        "otsu_threshold": round(result.threshold, 3),
        "warnings": "; ".join(([result.refused] if result.refused else []) + result.warnings),
        "mask": Path(path).name,
    }
