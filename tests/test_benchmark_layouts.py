"""Benchmark folders as inputs: the TCGA-MS, BRACS-MS and generic layouts read into one table, BRACS-MS
folds and resampling checked against independent computations, and errors that name what is wrong."""

from __future__ import annotations

import csv
import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.model_selection import StratifiedKFold

from magflow.benchmark.config import BenchmarkSpec, benchmark_specs
from magflow.benchmark.benchmark_fixture import BRACS_CLASSES, TCGA_CLASSES, write_bracs_ms, write_tcga_ms
from magflow.benchmark.folds import first_label_per_group, patient_folds
from magflow.benchmark.layouts import COLUMNS, FOLD_COLUMNS
from magflow.benchmark.paths import BRACS_SUBTYPES, PROFILE_MPPS
from magflow.benchmark.resample import region_at_mpp, step_sizes
from magflow.errors import ConfigError

TILE = 16
N_SLIDES, REGIONS = 6, 2


@pytest.fixture(autouse=True)
def _quiet_sklearn():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        yield


@pytest.fixture(scope="module")
def tcga(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tcga_ms")
    write_tcga_ms(root, n_slides=N_SLIDES, regions_per_slide=REGIONS, tile_px=TILE, seed=3)
    return root


@pytest.fixture(scope="module")
def bracs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bracs_ms")
    write_bracs_ms(root, rois_per_wsi=1, tile_px=TILE, seed=5)
    return root


def read(name: str, **settings) -> pd.DataFrame:
    return BenchmarkSpec.from_config(name, {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}).read()


def test_tcga_ms_fixture_reads_back(tcga):
    table = read("tcga", layout="tcga-ms", root=tcga)
    assert tuple(table.columns) == COLUMNS
    assert sorted(table["mpp"].unique()) == list(PROFILE_MPPS)
    assert len(table) == N_SLIDES * REGIONS * len(PROFILE_MPPS)
    ids = {mpp: set(group["image_id"]) for mpp, group in table.groupby("mpp")}
    assert all(present == ids[0.25] for present in ids.values())  # one region, one id, every mpp
    assert (table.groupby("image_id")["path"].nunique() == len(PROFILE_MPPS)).all()
    assert (table["image_id"].str.rsplit("_", n=2).str[0] == table["slide"]).all()
    assert (table["group"] == table["slide"]).all()
    labels = pd.read_csv(tcga / "labels.csv", dtype=str).set_index("slide_uuid")
    per_slide = table.drop_duplicates("slide").set_index("slide")
    assert per_slide["label"].to_dict() == labels["label"].to_dict()
    assert per_slide["label_id"].astype(str).to_dict() == labels["label_id"].to_dict()
    for column in FOLD_COLUMNS:
        assert per_slide[column].to_dict() == labels[column].to_dict()
        assert set(table[column]) == {"train", "dev", "test"}
    assert set(table["label"]) == set(TCGA_CLASSES)
    assert (table["label_id"] == table["label"].map(TCGA_CLASSES.index)).all()
    for path, mpp in table[["path", "mpp"]].itertuples(index=False):
        assert Path(path).parent.name == f"mpp_{mpp!r}"
    with Image.open(table["path"].iloc[-1]) as image:
        assert image.size == (TILE, TILE) and image.mode == "RGB"
    assert table.attrs["benchmark"] == "tcga" and table.attrs["layout"] == "tcga-ms"


def test_tcga_ms_reads_short_mpp_folder_names(tcga, tmp_path):
    root = tmp_path / "short"
    shutil.copytree(tcga, root)
    for old, new in [("mpp_1.0", "mpp_1"), ("mpp_2.0", "mpp_2")]:
        (root / old).rename(root / new)
    table = read("short", layout="tcga-ms", root=root)
    reference = read("tcga", layout="tcga-ms", root=tcga)
    assert table.drop(columns="path").equals(reference.drop(columns="path"))


def test_fixtures_are_deterministic(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    write_tcga_ms(tmp_path / "a", n_slides=2, regions_per_slide=1, tile_px=TILE, seed=9)
    write_tcga_ms(tmp_path / "b", n_slides=2, regions_per_slide=1, tile_px=TILE, seed=9)
    write_tcga_ms(tmp_path / "c", n_slides=2, regions_per_slide=1, tile_px=TILE, seed=10)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_bracs_ms_fixture_reads_back(bracs):
    table = read("bracs", layout="bracs-ms", root=bracs, patients=bracs / "BRACS.csv")
    assert tuple(table.columns) == COLUMNS
    ids = {mpp: set(group["image_id"]) for mpp, group in table.groupby("mpp")}
    assert len(ids) == len(PROFILE_MPPS) and all(present == ids[0.25] for present in ids.values())
    parts = table["image_id"].str.split("_")
    assert (table["label"] == parts.str[2]).all() and (table["slide"] == parts.str[0] + "_" + parts.str[1]).all()
    assert (table["label_id"] == table["label"].map(BRACS_SUBTYPES.index)).all()
    assert set(table["label"]) == set(BRACS_SUBTYPES)
    sheet = pd.read_csv(bracs / "BRACS.csv", dtype=str)
    assert table.drop_duplicates("slide").set_index("slide")["group"].to_dict() == \
        dict(zip(sheet["WSI Filename"], sheet["Patient Id"]))
    assert (table.groupby("slide")["group"].nunique() == 1).all()
    assert (bracs / "BRACS_1.0mpp").is_dir() and (bracs / "BRACS_0.375mpp").is_dir()  # the authors' spelling
    assert len(BRACS_CLASSES) == len(BRACS_SUBTYPES)


def test_bracs_ms_folds_are_patient_disjoint_and_match_sklearn(bracs):
    seed = 22
    table = read("bracs", layout="bracs-ms", root=bracs, patients=bracs / "BRACS.csv", seed=seed)
    # independently: patients in order of first appearance over the sorted 0.25 mpp file names,
    # each labelled by its first slide's first image
    sheet = dict(csv.reader((bracs / "BRACS.csv").open()))
    order: list[str] = []
    label_of: dict[str, int] = {}
    for path in sorted((bracs / "BRACS_0.25mpp").glob("BRACS_*.png")):
        wsi_number, subtype = path.stem.split("_")[1:3]
        patient = sheet[f"BRACS_{wsi_number}"]
        if patient not in label_of:
            order.append(patient)
            label_of[patient] = BRACS_SUBTYPES.index(subtype)
    labels = [label_of[p] for p in order]
    outer = StratifiedKFold(5, shuffle=True, random_state=seed)
    tested = []
    for fold, (rest, test) in enumerate(outer.split(order, labels)):
        inner = StratifiedKFold(5, shuffle=True, random_state=seed)
        _, dev = next(inner.split([order[i] for i in rest], [labels[i] for i in rest]))
        expected = {"test": {order[i] for i in test}, "dev": {order[rest[i]] for i in dev}}
        expected["train"] = set(order) - expected["test"] - expected["dev"]
        column = table[f"fold_{fold}"]
        assert (table.groupby("group")[f"fold_{fold}"].nunique() == 1).all()  # a patient is on one side
        for split, patients in expected.items():
            assert set(table.loc[column == split, "group"]) == patients, (fold, split)
        tested += sorted(expected["test"])
    assert sorted(tested) == sorted(order)  # every patient is tested exactly once


def test_patient_folds_are_stratified():
    rng = np.random.default_rng(0)
    labels = list(rng.choice(7, size=400, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.05]))
    patients = [f"p{i}" for i in range(len(labels))]
    overall = np.bincount(labels, minlength=7) / len(labels)
    folds = patient_folds(patients, labels, seed=42)
    assert len(folds) == 5
    for split in folds:
        for part, tolerance in (("test", 0.02), ("dev", 0.03)):
            members = [label for p, label in zip(patients, labels) if split[p] == part]
            assert np.abs(np.bincount(members, minlength=7) / len(members) - overall).max() <= tolerance
        assert sum(v == "dev" for v in split.values()) == pytest.approx(0.16 * len(labels), abs=7)
    assert sorted(p for split in folds for p, v in split.items() if v == "test") == sorted(patients)


def test_patient_label_is_its_first_slides_first_image():
    names = ["BRACS_20_N_0", "BRACS_10_IC_1", "BRACS_10_PB_0", "BRACS_30_ADH_0"]
    slides = ["BRACS_20", "BRACS_10", "BRACS_10", "BRACS_30"]
    groups = ["b", "a", "a", "b"]
    labels = [0, 6, 1, 4]
    assert first_label_per_group(names, slides, groups, labels) == (["a", "b"], [6, 0])


def test_generic_layout_with_and_without_folds(tcga, bracs, tmp_path):
    def generic_copy(source: Path, folder: str, reference: pd.DataFrame, root: Path) -> pd.DataFrame:
        for mpp in PROFILE_MPPS:
            shutil.copytree(source / folder.format(repr(mpp)), root / f"mpp_{mpp:g}")
        first = reference[reference["mpp"] == 0.25]
        return pd.DataFrame({"image": first["image_id"] + ".png", "label": first["label"], "group": first["group"]})

    # no fold columns: stratified group folds, as for BRACS-MS (a group's label is its first image's)
    reference = read("bracs", layout="bracs-ms", root=bracs, patients=bracs / "BRACS.csv", seed=7)
    rows = generic_copy(bracs, "BRACS_{}mpp", reference, tmp_path / "g1")
    rows.to_csv(tmp_path / "g1" / "labels.csv", index=False)
    table = read("g", layout="generic", root=tmp_path / "g1", seed=7)
    assert table.attrs["folds"] == "stratified group folds, seed 7"
    assert (table["image_id"].str.removesuffix(".png").to_numpy() == reference["image_id"].to_numpy()).all()
    same = ["mpp", "label", "group", *FOLD_COLUMNS]
    assert (table[same].to_numpy() == reference[same].to_numpy()).all()
    assert (table["label_id"] == table["label"].map(sorted(BRACS_SUBTYPES).index)).all()

    # fold columns given; too few groups for magflow's own folds is an error that says so
    reference = read("tcga", layout="tcga-ms", root=tcga)
    root = tmp_path / "g2"
    rows = generic_copy(tcga, "mpp_{}", reference, root)
    rows.to_csv(root / "labels.csv", index=False)
    with pytest.raises(ConfigError, match="cannot make stratified 5-fold splits"):
        read("g", layout="generic", root=root)
    first = reference[reference["mpp"] == 0.25]
    rows.assign(**{c: first[c].to_numpy() for c in FOLD_COLUMNS}).to_csv(root / "folds.csv", index=False)
    table = read("g", layout="generic", root=root, labels=root / "folds.csv")
    assert table.attrs["folds"] == "the label file's fold columns (folds.csv)"
    assert (table[list(FOLD_COLUMNS)].to_numpy() == reference[list(FOLD_COLUMNS)].to_numpy()).all()
    (root / "mpp_0.5" / rows["image"].iloc[0]).unlink()
    with pytest.raises(ConfigError) as error:
        read("g", layout="generic", root=root)
    assert_names(error, "g", "generic", root / "mpp_0.5" / rows["image"].iloc[0])


def assert_names(error: pytest.ExceptionInfo, name: str, layout: str, path: Path) -> None:
    message = str(error.value)
    assert f"benchmark '{name}'" in message and f"Expected layout: " in message and layout in message, message
    assert str(path) in message, message


def test_missing_folder_mpp_and_label_name_benchmark_path_and_layout(tcga, bracs, tmp_path):
    with pytest.raises(ConfigError) as error:
        BenchmarkSpec.from_config("gone", {"layout": "tcga-ms", "root": str(tmp_path / "nowhere")})
    assert_names(error, "gone", "tcga-ms", tmp_path / "nowhere")

    root = tmp_path / "tcga"
    shutil.copytree(tcga, root)
    shutil.rmtree(root / "mpp_0.375")
    with pytest.raises(ConfigError) as error:
        BenchmarkSpec.from_config("t", {"layout": "tcga-ms", "root": str(root)})
    assert_names(error, "t", "tcga-ms", root)
    assert "mpp 0.375" in str(error.value) and "mpp_0.375" in str(error.value)

    with pytest.raises(ConfigError) as error:
        BenchmarkSpec.from_config("t", {"layout": "tcga-ms", "root": str(tcga), "labels": str(tmp_path / "x.csv")})
    assert_names(error, "t", "tcga-ms", tmp_path / "x.csv")

    labels = pd.read_csv(tcga / "labels.csv", dtype=str)
    labels.iloc[1:].to_csv(tmp_path / "partial.csv", index=False)  # one slide's label left out
    with pytest.raises(ConfigError) as error:
        read("t", layout="tcga-ms", root=tcga, labels=tmp_path / "partial.csv")
    assert_names(error, "t", "tcga-ms", tmp_path / "partial.csv")
    assert labels["slide_uuid"].iloc[0] in str(error.value)

    labels.drop(columns="fold_3").to_csv(tmp_path / "nofold.csv", index=False)
    with pytest.raises(ConfigError, match="fold_3"):
        read("t", layout="tcga-ms", root=tcga, labels=tmp_path / "nofold.csv")

    one = next((root / "mpp_2.0").glob("*.png"))
    one.unlink()  # a region missing at one mpp
    shutil.copytree(tcga / "mpp_0.375", root / "mpp_0.375")
    with pytest.raises(ConfigError) as error:
        read("t", layout="tcga-ms", root=root)
    assert_names(error, "t", "tcga-ms", root)
    assert "mpp 2" in str(error.value) and one.stem in str(error.value)

    with pytest.raises(ConfigError) as error:
        BenchmarkSpec.from_config("b", {"layout": "bracs-ms", "root": str(bracs)})  # default sheet BRACS.xlsx absent
    assert_names(error, "b", "bracs-ms", bracs / "BRACS.xlsx")

    broken = tmp_path / "bracs"
    shutil.copytree(bracs, broken)
    name = next((broken / "BRACS_0.25mpp").glob("*.png")).name
    for folder in broken.glob("BRACS_*mpp"):
        (folder / name).rename(folder / name.replace("_", "_XX_", 2).replace("_XX_", "_", 1))
    with pytest.raises(ConfigError) as error:
        read("b", layout="bracs-ms", root=broken, patients=broken / "BRACS.csv")
    assert "subtype" in str(error.value) and "bracs-ms" in str(error.value)


def test_config_entries(tcga, tmp_path):
    spec = BenchmarkSpec.from_config("t", {"layout": "tcga-ms", "root": str(tcga)})
    assert spec.labels == tcga / "labels.csv" and spec.mpps == PROFILE_MPPS and spec.seed == 42
    spec = BenchmarkSpec.from_config("b", {"layout": "bracs-ms", "root": str(tmp_path)}, check_paths=False)
    assert spec.patients == tmp_path / "BRACS.xlsx" and spec.labels is None
    for settings, key in [({"layout": "tcga", "root": "x"}, "benchmarks.b.layout"),
                          ({"layout": "tcga-ms"}, "benchmarks.b.root"),
                          ({"layout": "tcga-ms", "root": "x", "mpps": [0.25, -1]}, "benchmarks.b.mpps"),
                          ({"layout": "tcga-ms", "root": "x", "seed": -1}, "benchmarks.b.seed"),
                          ({"layout": "tcga-ms", "root": "x", "patients": "p.csv"}, "benchmarks.b.patients"),
                          ({"layout": "bracs-ms", "root": "x", "labels": "l.csv"}, "benchmarks.b.labels"),
                          ({"layout": "tcga-ms", "root": "x", "colour": 1}, "benchmarks.b")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            BenchmarkSpec.from_config("b", settings, check_paths=False)
    assert set(benchmark_specs({"t": {"layout": "tcga-ms", "root": str(tcga)}})) == {"t"}
    assert benchmark_specs(None) == {}


def test_step_sizes_halve_and_the_last_step_takes_the_rest():
    assert step_sizes(224, 224) == []
    assert step_sizes(336, 224) == [224]
    assert step_sizes(672, 224) == [336, 224]
    assert step_sizes(1344, 224) == [672, 336, 224]
    assert step_sizes(1792, 224) == [896, 448, 224]
    assert step_sizes(150, 32) == [75, 37, 32]


def independent_resample(region: np.ndarray, mpp: float, tile: int) -> np.ndarray:
    crop = int(tile * mpp / 0.25)
    top, left = (region.shape[0] - crop) // 2, (region.shape[1] - crop) // 2
    image = region[top:top + crop, left:left + crop].copy()
    size = crop
    while size > tile:
        target = max(tile, size // 2)
        sigma = (size / target) / 2.5
        for channel in range(3):
            image[:, :, channel] = ndimage.gaussian_filter(image[:, :, channel], sigma=sigma, mode="reflect")
        image = np.array(Image.fromarray(image).resize((target, target), Image.Resampling.BICUBIC))
        size = target
    return image


@pytest.mark.parametrize("tile", [24, 37])
def test_resample_matches_a_step_by_step_computation(tile):
    rng = np.random.default_rng(tile)
    smooth = ndimage.gaussian_filter(rng.normal(size=(8 * tile + 9, 8 * tile + 4, 3)), (3, 3, 0))
    region = np.clip(128 + 60 * smooth / smooth.std() + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    for mpp in PROFILE_MPPS:
        ours = region_at_mpp(region, mpp, tile)
        assert ours.shape == (tile, tile, 3) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, independent_resample(region, mpp, tile))
    with pytest.raises(ValueError, match="smaller"):
        region_at_mpp(region[: 4 * tile], 2.0, tile)


def test_schema_describes_the_entries_with_the_package_defaults():
    import yaml

    from magflow.benchmark.config import DEFAULT_SEED, KEYS
    from magflow.config import check_config

    schema_path = Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    entry = yaml.safe_load(schema_path.read_text())["properties"]["benchmarks"]["additionalProperties"]["else"]
    assert set(entry["properties"]) == set(KEYS)
    assert entry["properties"]["layout"]["enum"] == ["tcga-ms", "bracs-ms", "generic"]
    assert tuple(entry["properties"]["mpps"]["default"]) == PROFILE_MPPS
    assert entry["properties"]["seed"]["default"] == DEFAULT_SEED
    config = yaml.safe_load((schema_path.parents[2] / "config" / "config.yaml").read_text())
    assert all(entry.get("fixture") for entry in config["benchmarks"].values())  # the demo's: generated only
    config["benchmarks"] = {"b": {"layout": "bracs-ms", "root": "r", "patients": "p.csv", "seed": 22}}
    check_config(config, schema_path)
    config["benchmarks"] = {"b": {"layout": "bracs", "root": "r"}}
    with pytest.raises(ConfigError, match="benchmarks.b.layout"):
        check_config(config, schema_path)
