"""Read a multi-magnification benchmark folder into one table, one row per image and mpp.

Columns (the API of the embedding and protocol steps):

- ``path``: the image file (str); ``mpp``: its resolution (float, µm/px);
- ``image_id``: the region; the images of one physical region at every mpp share it;
- ``label`` (str) and ``label_id`` (int); ``group``: the unit kept on one side of every split
  (TCGA-MS: the slide; BRACS-MS: the patient); ``slide``: the slide the region comes from;
- ``fold_0`` … ``fold_4``: ``train``, ``dev``, ``test``, or ``""`` where a fold leaves the image out.

Rows are sorted by mpp, then image_id. ``table.attrs`` records the benchmark, layout and fold source.
Facts of the folder layouts come from the authors' evaluation code (``dataloaders.py``): TCGA-MS
reads ``mpp_{m}`` folders, slide uuid = the file stem without its last two ``_`` fields, ignores
``._*`` files; BRACS-MS reads ``BRACS_{m}mpp`` folders, slide = the first two ``_`` fields, subtype =
the third, and a slide missing from the patient sheet is its own patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .folds import N_FOLDS, SPLITS, first_label_per_group, patient_folds
from .paths import (BRACS_PATIENT_COLUMN, BRACS_SHEET, BRACS_SUBTYPES, BRACS_WSI_COLUMN, layout_error,
                    mpp_folder)

FOLD_COLUMNS = tuple(f"fold_{i}" for i in range(N_FOLDS))
COLUMNS = ("path", "mpp", "image_id", "label", "label_id", "group", "slide", *FOLD_COLUMNS)


def list_images(name: str, layout: str, root: Path, mpps: Sequence[float]) -> dict[float, list[Path]]:
    """The PNGs of every mpp folder, sorted by name; an empty folder is an error."""
    if not root.is_dir():
        raise layout_error(name, layout, "the benchmark root is not a folder", root)
    images = {}
    for mpp in mpps:
        folder = mpp_folder(name, layout, root, mpp)
        files = sorted(p for p in folder.glob("*.png") if not p.name.startswith("._"))
        if not files:
            raise layout_error(name, layout, f"no .png images for mpp {mpp:g}", folder)
        images[float(mpp)] = files
    return images


def check_aligned(name: str, layout: str, root: Path, ids: dict[float, set[str]]) -> None:
    """Every region must exist at every mpp, so a score at one mpp is about the same regions as at another."""
    union = set().union(*ids.values())
    for mpp, present in ids.items():
        missing = sorted(union - present)
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise layout_error(name, layout, f"{len(missing)} region(s) of other mpps are missing at mpp "
                               f"{mpp:g} ({shown})", root)


def read_csv(name: str, layout: str, path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise layout_error(name, layout, f"the {what} is missing", path)
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise layout_error(name, layout, f"the {what} lacks column(s) {', '.join(absent)} "
                           f"(it has {', '.join(table.columns)})", path)
    return table


def fold_values(name: str, layout: str, path: Path, table: pd.DataFrame) -> pd.DataFrame:
    """The fold columns, with empty / NA cells as ``""`` (left out of that fold); other values refused."""
    folds = table.reindex(columns=list(FOLD_COLUMNS)).fillna("").astype(str)
    folds = folds.apply(lambda column: column.str.strip()).replace({"nan": "", "NA": "", "NaN": ""})
    bad = sorted(set(folds.to_numpy().ravel()) - {*SPLITS, ""})
    if bad:
        raise layout_error(name, layout, f"fold columns hold {bad}; allowed: {', '.join(SPLITS)} or empty", path)
    return folds


def finish(rows: pd.DataFrame, name: str, layout: str, root: Path, fold_source: str) -> pd.DataFrame:
    check_aligned(name, layout, root, {m: set(g["image_id"]) for m, g in rows.groupby("mpp")})
    table = rows.sort_values(["mpp", "image_id"], kind="stable").reset_index(drop=True)
    table = table.astype({"path": str, "mpp": float, "image_id": str, "label": str, "label_id": int,
                          "group": str, "slide": str})
    table = table.loc[:, list(COLUMNS)]
    table.attrs.update(benchmark=name, layout=layout, root=str(root), folds=fold_source)
    return table


def image_rows(images: dict[float, list[Path]]) -> pd.DataFrame:
    return pd.DataFrame([{"path": str(p), "mpp": mpp, "image_id": p.stem}
                         for mpp, files in images.items() for p in files])


def int_labels(name: str, layout: str, path: Path, values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or (numbers != numbers.round()).any():
        bad = values[numbers.isna() | (numbers != numbers.round())].iloc[0]
        raise layout_error(name, layout, f"label_id must be a whole number, got '{bad}'", path)
    return numbers.astype(int)


def read_tcga_ms(name: str, root: Path, labels_path: Path, mpps: Sequence[float]) -> pd.DataFrame:
    layout = "tcga-ms"
    images = list_images(name, layout, root, mpps)
    labels = read_csv(name, layout, labels_path, ["slide_uuid", "label_id", *FOLD_COLUMNS], "label file")
    if labels["slide_uuid"].duplicated().any():
        repeated = labels.loc[labels["slide_uuid"].duplicated(), "slide_uuid"].iloc[0]
        raise layout_error(name, layout, f"slide_uuid '{repeated}' has more than one row", labels_path)
    labels = labels.assign(label_id=int_labels(name, layout, labels_path, labels["label_id"]),
                           label=labels["label"] if "label" in labels else labels["label_id"].str.strip())
    labels[list(FOLD_COLUMNS)] = fold_values(name, layout, labels_path, labels)
    rows = image_rows(images)
    short = rows.loc[rows["image_id"].str.count("_") < 2, "path"]
    if len(short):
        raise layout_error(name, layout, "an image name is not {slide_uuid}_{x}_{y}.png", short.iloc[0])
    rows["slide"] = rows["image_id"].str.rsplit("_", n=2).str[0]
    unlabelled = sorted(set(rows["slide"]) - set(labels["slide_uuid"]))
    if unlabelled:
        raise layout_error(name, layout, f"{len(unlabelled)} slide(s) of the images have no row in the label "
                           f"file (e.g. '{unlabelled[0]}')", labels_path)
    rows = rows.merge(labels.rename(columns={"slide_uuid": "slide"}), on="slide", how="left")
    rows["group"] = rows["slide"]
    return finish(rows, name, layout, root, f"the label file's fold columns ({labels_path.name})")


def read_patient_sheet(name: str, path: Path) -> dict[str, str]:
    """WSI -> patient from the BRACS sheet: the official BRACS.xlsx (sheet WSI_Information) or a CSV/TSV."""
    layout = "bracs-ms"
    required = [BRACS_WSI_COLUMN, BRACS_PATIENT_COLUMN]
    if path.suffix.lower() in (".xlsx", ".xls"):
        if not path.is_file():
            raise layout_error(name, layout, "the patient sheet is missing", path)
        try:
            sheet = pd.read_excel(path, sheet_name=BRACS_SHEET, dtype=str)
        except ImportError as error:
            raise layout_error(name, layout, f"reading .xlsx needs openpyxl ({error}); install it or save the "
                               f"sheet {BRACS_SHEET} as CSV and give that", path) from None
        except ValueError as error:
            raise layout_error(name, layout, f"cannot read sheet {BRACS_SHEET} ({error})", path) from None
        absent = [c for c in required if c not in sheet.columns]
        if absent:
            raise layout_error(name, layout, f"the patient sheet lacks column(s) {', '.join(absent)}", path)
    else:
        sheet = read_csv(name, layout, path, required, "patient sheet")
    sheet = sheet.dropna(subset=required).drop_duplicates(BRACS_WSI_COLUMN)  # the first row wins, as the authors'
    return dict(zip(sheet[BRACS_WSI_COLUMN].str.strip(), sheet[BRACS_PATIENT_COLUMN].str.strip()))


def read_bracs_ms(name: str, root: Path, sheet_path: Path, mpps: Sequence[float], seed: int) -> pd.DataFrame:
    layout = "bracs-ms"
    images = list_images(name, layout, root, mpps)
    patients = read_patient_sheet(name, sheet_path)
    rows = image_rows(images)
    parts = rows["image_id"].str.split("_")
    bad = rows.loc[(parts.str.len() < 3) | ~parts.str[2].isin(BRACS_SUBTYPES), "path"]
    if len(bad):
        raise layout_error(name, layout, "an image name is not BRACS_{wsi}_{subtype}_*.png with a known subtype",
                           bad.iloc[0])
    rows["slide"] = parts.str[0] + "_" + parts.str[1]
    rows["label"] = parts.str[2]
    rows["label_id"] = rows["label"].map(BRACS_SUBTYPES.index)
    rows["group"] = rows["slide"].map(lambda wsi: patients.get(wsi, wsi))  # unlisted: its own patient
    check_aligned(name, layout, root, {m: set(g["image_id"]) for m, g in rows.groupby("mpp")})
    first = rows[rows["mpp"] == rows["mpp"].iloc[0]]
    order, group_labels = first_label_per_group(list(first["image_id"]), list(first["slide"]),
                                                list(first["group"]), list(first["label_id"]))
    assign_folds(rows, stratified_folds(name, layout, root, order, group_labels, seed))
    return finish(rows, name, layout, root, f"stratified patient folds, seed {seed}")


def stratified_folds(name: str, layout: str, where: Path, groups: list[str], labels: list[int],
                     seed: int) -> list[dict[str, str]]:
    try:
        return patient_folds(groups, labels, seed)
    except ValueError as error:  # scikit-learn: fewer units of every label than folds
        raise layout_error(name, layout, f"{len(groups)} patients/groups cannot make stratified 5-fold splits "
                           f"with a 5-fold dev split inside ({error})", where) from None


def assign_folds(rows: pd.DataFrame, folds: list[dict[str, str]]) -> None:
    for column, split in zip(FOLD_COLUMNS, folds):
        rows[column] = rows["group"].map(split)


def read_generic(name: str, root: Path, labels_path: Path, mpps: Sequence[float], seed: int) -> pd.DataFrame:
    layout = "generic"
    if not root.is_dir():
        raise layout_error(name, layout, "the benchmark root is not a folder", root)
    labels = read_csv(name, layout, labels_path, ["image", "label", "group"], "label file")
    if labels["image"].duplicated().any():
        raise layout_error(name, layout, f"image '{labels.loc[labels['image'].duplicated(), 'image'].iloc[0]}' "
                           "has more than one row", labels_path)
    names = sorted(labels["label"].unique())
    label_id = (int_labels(name, layout, labels_path, labels["label_id"]) if "label_id" in labels
                else labels["label"].map(names.index))
    labels = labels.assign(label_id=label_id, slide=labels["slide"] if "slide" in labels else labels["group"])
    frames = []
    for mpp in mpps:
        folder = mpp_folder(name, layout, root, mpp)
        paths = labels["image"].map(lambda image: folder / image)
        missing = paths[~paths.map(Path.is_file)]
        if len(missing):
            raise layout_error(name, layout, f"{len(missing)} image(s) of the label file are missing at mpp "
                               f"{mpp:g}, e.g.", missing.iloc[0])
        frames.append(labels.assign(path=paths.map(str), mpp=float(mpp), image_id=labels["image"]))
    rows = pd.concat(frames, ignore_index=True)
    given = [c for c in FOLD_COLUMNS if c in labels]
    if given and len(given) < len(FOLD_COLUMNS):
        raise layout_error(name, layout, f"the label file has {', '.join(given)} but not all of "
                           f"{', '.join(FOLD_COLUMNS)}", labels_path)
    if given:
        rows[list(FOLD_COLUMNS)] = fold_values(name, layout, labels_path, rows)
        source = f"the label file's fold columns ({labels_path.name})"
    else:
        order, group_labels = first_label_per_group(list(labels["image"]), list(labels["slide"]),
                                                    list(labels["group"]), list(label_id))
        assign_folds(rows, stratified_folds(name, layout, labels_path, order, group_labels, seed))
        source = f"stratified group folds, seed {seed}"
    return finish(rows, name, layout, root, source)
