"""The ``benchmarks:`` config section: one entry per benchmark folder, checked before any job runs.

Imported by the workflow at parse time, so it stays light (no pandas, no scikit-learn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magflow.defaults import default, schema_defaults
from magflow.errors import ConfigError

from .paths import LAYOUTS, layout_error, mpp_folder

DEFAULT_SEED = default("benchmarks.<name>.seed")  # the authors' BRACS-MS fold seed, 42 (their run script passes 22)
DEFAULT_LABELS = {"tcga-ms": "labels.csv", "generic": "labels.csv"}
DEFAULT_PATIENTS = "BRACS.xlsx"  # beside the mpp folders, where the authors' loader looks by default
KEYS = ("layout", "root", "labels", "patients", "mpps", "seed", "fixture")
FIXTURE_FOLDER = "results/benchmark_fixture"  # a fixture benchmark's root: FIXTURE_FOLDER/<name>
FIXTURE_LAYOUTS = ("tcga-ms", "bracs-ms")  # the layouts magflow.benchmark.benchmark_fixture writes
FIXTURE_SHEETS = {"tcga-ms": "labels.csv", "bracs-ms": "BRACS.csv"}  # where the fixture writer puts them
# The sizes of a generated fixture (magflow benchmark-fixture and the benchmark_fixture rule): small enough
# for the demo on 2 CPU cores; 64 px images are the demo runs' input size. 10 slides give every TCGA-MS fold
# two test slides of two classes; 49 BRACS-MS patients give 7 per subtype, enough for both 5-fold splits.
FIXTURE_SIZES = {"tcga-ms": {"n_slides": 10, "regions_per_slide": 4, "tile_px": 64, "seed": 0},
                 "bracs-ms": {"n_patients": 49, "rois_per_wsi": 2, "tile_px": 64, "seed": 0}}


@dataclass(frozen=True)
@schema_defaults("benchmarks.<name>")
class BenchmarkSpec:
    """One benchmark: where its images and labels are and how they are laid out."""

    name: str
    layout: str
    root: Path
    labels: Path | None  # tcga-ms, generic: the label CSV
    patients: Path | None  # bracs-ms: the WSI -> patient sheet
    mpps: tuple[float, ...]
    seed: int  # folds made by magflow (bracs-ms; generic without fold columns)
    fixture: bool  # a small synthetic folder the workflow writes at root (FIXTURE_FOLDER/<name>)

    @property
    def input_path(self) -> Path:
        """What the benchmark step reads first, as the workflow tracks it: a fixture's folder (its rule writes it),
        else the label file (tcga-ms, generic) or the patient sheet (bracs-ms)."""
        if self.fixture:
            return self.root
        return Path(self.patients if self.layout == "bracs-ms" else self.labels)  # type: ignore[arg-type]

    @classmethod
    def from_config(cls, name: str, settings: Mapping[str, Any], check_paths: bool = True) -> BenchmarkSpec:
        """The entry ``benchmarks.<name>``; relative paths are taken from the working directory.
        With ``check_paths`` the root, every mpp folder and the label file or patient sheet must exist
        (not for a fixture, which the workflow writes)."""
        where = f"benchmarks.{name}"
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(KEYS)}, got {settings!r}")
        unknown = sorted(set(settings) - set(KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(KEYS)}")
        layout = settings.get("layout")
        if layout not in LAYOUTS:
            raise ConfigError(f"{where}.layout: must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if not isinstance(settings.get("root"), str) or not settings["root"]:
            raise ConfigError(f"{where}.root: give the benchmark folder (the one holding the mpp folders)")
        root = Path(settings["root"])
        labels = settings.get("labels")
        patients = settings.get("patients")
        fixture = settings.get("fixture", default("benchmarks.<name>.fixture"))
        if not isinstance(fixture, bool):
            raise ConfigError(f"{where}.fixture: true or false, got {fixture!r}")
        if fixture:
            check_fixture(name, layout, settings["root"], labels, patients)
            sheet = root / FIXTURE_SHEETS[layout]
            labels, patients = (None, sheet) if layout == "bracs-ms" else (sheet, None)
        if layout == "bracs-ms":
            if labels is not None:
                raise ConfigError(f"{where}.labels: bracs-ms takes its labels from the file names; "
                                  "give the WSI -> patient sheet as `patients`")
            patients = Path(patients) if patients else root / DEFAULT_PATIENTS
        else:
            if patients is not None:
                raise ConfigError(f"{where}.patients: only bracs-ms has a patient sheet; {layout} takes "
                                  "groups from its label file")
            labels = Path(labels) if labels else root / DEFAULT_LABELS[layout]
        mpps = tuple(settings.get("mpps", default("benchmarks.<name>.mpps")))
        if not mpps or any(isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0
                           for m in mpps) or len(set(mpps)) != len(mpps):
            raise ConfigError(f"{where}.mpps: give distinct positive numbers, got {list(mpps)}")
        seed = settings.get("seed", DEFAULT_SEED)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}.seed: must be a whole number >= 0, got {seed!r}")
        spec = cls(name, layout, root, labels, patients, tuple(float(m) for m in mpps), seed, fixture)
        if check_paths and not fixture:
            spec.check_paths()
        return spec

    def check_paths(self) -> None:
        """Raise a ConfigError naming the benchmark, the missing path and the expected layout."""
        if not self.root.is_dir():
            raise layout_error(self.name, self.layout, "the benchmark root is not a folder", self.root)
        for mpp in self.mpps:
            mpp_folder(self.name, self.layout, self.root, mpp)
        sheet, what = (self.patients, "patient sheet") if self.layout == "bracs-ms" else (self.labels, "label file")
        if sheet is None or not sheet.is_file():
            raise layout_error(self.name, self.layout, f"the {what} is missing", sheet)

    def read(self):  # -> pandas.DataFrame (pandas is imported only here)
        """The benchmark's table (see :mod:`magflow.benchmark.layouts`)."""
        from .layouts import read_bracs_ms, read_generic, read_tcga_ms

        if self.layout == "tcga-ms":
            return read_tcga_ms(self.name, self.root, self.labels, self.mpps)
        if self.layout == "bracs-ms":
            return read_bracs_ms(self.name, self.root, self.patients, self.mpps, self.seed)
        return read_generic(self.name, self.root, self.labels, self.mpps, self.seed)


def fixture_root(name: str) -> str:
    """Where the workflow writes the fixture of benchmark ``name``."""
    return f"{FIXTURE_FOLDER}/{name}"


def check_fixture(name: str, layout: str, root: str, labels: Any, patients: Any) -> None:
    """A fixture is generated inside the workflow's results, at :func:`fixture_root`, with its own label
    file: it can never stand for (or overwrite) a real benchmark folder."""
    where = f"benchmarks.{name}"
    if layout not in FIXTURE_LAYOUTS:
        raise ConfigError(f"{where}.fixture: magflow writes fixtures in the {' and '.join(FIXTURE_LAYOUTS)} layouts, "
                          f"not {layout}; set fixture: false and give a benchmark folder")
    if Path(root).as_posix().rstrip("/") != fixture_root(name):
        raise ConfigError(f"{where}.root: a fixture is written by the workflow to {fixture_root(name)} (under "
                          f"results/), got {root}; set root: {fixture_root(name)}, or fixture: false for a real folder")
    if labels is not None or patients is not None:
        raise ConfigError(f"{where}: a fixture writes its own {FIXTURE_SHEETS[layout]}; remove "
                          f"{'labels' if labels is not None else 'patients'} or set fixture: false")


def benchmark_specs(section: Mapping[str, Any] | None, check_paths: bool = True) -> dict[str, BenchmarkSpec]:
    """Every entry of the ``benchmarks:`` section, by name. An entry set to null is off: that is how a
    config laid over another (``--configfile``, merged key by key) removes one of its benchmarks."""
    return {name: BenchmarkSpec.from_config(name, settings, check_paths)
            for name, settings in (section or {}).items() if settings is not None}
