"""Where a benchmark's files must be, and the error that says so (light: imported at workflow parse)."""

from __future__ import annotations

import os
from pathlib import Path

from magflow.errors import ConfigError

PROFILE_MPPS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)  # the continuous-magnification paper's 7
STANDARD_MPPS = (0.25, 0.5, 1.0, 2.0)  # the four scanner scales its probes are fit on
BRACS_SUBTYPES = ("N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC")  # label_id = position, as the authors'
BRACS_SHEET = "WSI_Information"
BRACS_WSI_COLUMN, BRACS_PATIENT_COLUMN = "WSI Filename", "Patient Id"
MPP_FOLDERS = {"tcga-ms": "mpp_{}", "bracs-ms": "BRACS_{}mpp", "generic": "mpp_{}"}
EXPECTED = {
    "tcga-ms": "ROOT/mpp_{m}/{slide_uuid}_{x}_{y}.png for every mpp m (0.25 ... 2.0), and a label CSV "
               "(default ROOT/labels.csv) with columns slide_uuid, label_id and fold_0 ... fold_4 "
               "(train/dev/test)",
    "bracs-ms": "ROOT/BRACS_{m}mpp/BRACS_{wsi}_{subtype}_*.png for every mpp m (0.25 ... 2.0), subtype one of "
                f"{', '.join(BRACS_SUBTYPES)}, and a patient sheet (default ROOT/BRACS.xlsx, sheet "
                f"{BRACS_SHEET}; or a CSV/TSV) with columns '{BRACS_WSI_COLUMN}' and '{BRACS_PATIENT_COLUMN}'",
    "generic": "ROOT/mpp_{m}/IMAGE for every mpp m, and a label CSV (default ROOT/labels.csv) with columns "
               "image (the file name inside each mpp folder), label, group and optionally label_id and "
               "fold_0 ... fold_4 (train/dev/test)",
}
LAYOUTS = tuple(EXPECTED)


def layout_error(name: str, layout: str, problem: str, path: str | os.PathLike[str]) -> ConfigError:
    return ConfigError(f"benchmark '{name}' ({layout} layout): {problem}: {path}. "
                       f"Expected layout: {EXPECTED[layout]}.")


def mpp_spellings(mpp: float) -> list[str]:
    """How a folder may spell an mpp: as Python prints the float (``1.0``, the authors' scripts pass
    floats) or in its short form (``1``)."""
    return list(dict.fromkeys([repr(float(mpp)), f"{float(mpp):g}"]))


def mpp_folder(name: str, layout: str, root: Path, mpp: float) -> Path:
    candidates = [root / MPP_FOLDERS[layout].format(s) for s in mpp_spellings(mpp)]
    found = [c for c in candidates if c.is_dir()]
    if not found:
        raise layout_error(name, layout, f"no folder for mpp {mpp:g} (looked for "
                           f"{' or '.join(c.name for c in candidates)})", root)
    return found[0]
