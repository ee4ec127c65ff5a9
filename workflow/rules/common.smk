# Helpers for every stage: the slide sheet (read and validated once) and the target lists.
import os

import pandas as pd

from magflow.sheet import read_sheet

SLIDE_ENTRIES = read_sheet(config["slides"])
SLIDES = pd.DataFrame([entry.as_dict() for entry in SLIDE_ENTRIES]).set_index("slide_id", drop=False)
validate(SLIDES.astype(object).where(SLIDES.notna(), None), "../schemas/slides.schema.yaml")
SLIDE_IDS = list(SLIDES.index)


def slide_entry(slide_id):
    return SLIDES.loc[slide_id]


def slide_path(wildcards):
    return slide_entry(wildcards.slide_id)["path"]


def slide_input(wildcards):
    """The slide as a tracked input when it exists or a rule makes it (phantoms). A missing file is not
    an input, so it fails only its own job, with a message naming it, and --keep-going runs the rest."""
    path = slide_path(wildcards)
    return path if path.startswith("results/phantom/") or os.path.exists(path) else []


def slide_mpp(wildcards):
    mpp = slide_entry(wildcards.slide_id)["mpp"]
    return None if pd.isna(mpp) else float(mpp)


def slide_label(wildcards):
    label = slide_entry(wildcards.slide_id)["label"]
    return None if pd.isna(label) else str(label)


TILESETS = list(config["tilesets"])


def preprocess_targets():
    return (
        expand(["results/masks/{slide_id}.h5", "results/masks/{slide_id}.qc.png"], slide_id=SLIDE_IDS)
        + ["results/qc/slides.html"]
        + expand("results/tiles/{tileset}/{slide_id}.h5", tileset=TILESETS, slide_id=SLIDE_IDS)
        + expand("results/tiles/{tileset}/manifest.html", tileset=TILESETS)
    )
