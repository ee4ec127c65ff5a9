"""Small synthetic benchmark folders in the exact TCGA-MS and BRACS-MS layouts, cut from phantom slides.

Each region is centred where the phantom's label grid holds one class over (at least) the region's
0.25 mpp view, so that class is the region's label. A 0.25 mpp source region is cut around the centre
and every mpp is made from it by :func:`magflow.benchmark.resample.region_at_mpp` (BRACS-MS's recipe),
so one region has the same centre at every mpp. Everything is drawn from ``seed``: the same call writes
the same files. ``tile_px`` sets the image size (224 as in the benchmarks; smaller for quick tests).
"""

from __future__ import annotations

import csv
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from magflow.errors import ConfigError
from magflow.phantom.slide import CLASS_NAMES, PhantomSpec, phantom_layout, render_phantom
from magflow.phantom.noise import stream

from .folds import N_FOLDS
from .paths import BRACS_PATIENT_COLUMN, BRACS_SUBTYPES, BRACS_WSI_COLUMN, MPP_FOLDERS, PROFILE_MPPS
from .resample import SOURCE_MPP, min_region_px, region_at_mpp

TCGA_CLASSES = ("small_dense", "large_sparse", "glandular")  # told apart at cell scale vs by architecture
BRACS_CLASSES = ("stroma", "small_dense", "large_sparse", "glandular", "banded", "lobular", "rare")  # N ... IC
MAX_ATTEMPTS = 200  # phantom seeds tried for a slide that holds enough regions of a class


@dataclass(frozen=True)
class RegionGeometry:
    """Sizes in µm of a fixture region: the source cut at 0.25 mpp and its pure-class core."""

    tile_px: int
    mpps: tuple[float, ...]
    margin_px: int = 0  # extra source px (BRACS-MS regions are larger than the crop they need)

    @property
    def source_px(self) -> int:
        return min_region_px(self.mpps, self.tile_px) + self.margin_px

    @property
    def slide_um(self) -> float:
        return max(512.0, math.ceil(2.5 * self.source_px * SOURCE_MPP / 64) * 64)

    @property
    def core_um(self) -> float:
        return self.tile_px * min(self.mpps)


def class_centres(layout_labels: np.ndarray, cell_um: float, class_index: int, geometry: RegionGeometry) -> np.ndarray:
    """Centres (x, y) µm of label cells whose core box is all ``class_index`` and whose source box fits."""
    core = max(1, math.ceil(geometry.core_um / cell_um))
    pure = ndimage.minimum_filter((layout_labels == class_index).astype(np.uint8), size=core, mode="constant")
    rows, cols = np.nonzero(pure)
    xy = np.stack([(cols + 0.5) * cell_um, (rows + 0.5) * cell_um], axis=1)
    half = geometry.source_px * SOURCE_MPP / 2 + cell_um
    inside = np.all((xy >= half) & (xy <= geometry.slide_um - half), axis=1)
    return xy[inside]


def phantom_with(cls: str, count: int, seed: int, key: str, geometry: RegionGeometry) -> tuple[PhantomSpec, np.ndarray]:
    """A phantom spec holding at least ``count`` centres of class ``cls`` (tried seed after seed) and them."""
    draws = stream(seed, key)
    for _ in range(MAX_ATTEMPTS):
        spec = PhantomSpec(width_um=geometry.slide_um, height_um=geometry.slide_um, mpp=SOURCE_MPP,
                           seed=int(draws.integers(2**31)), label=int(cls == "rare"))
        layout = phantom_layout(spec)
        centres = class_centres(layout.labels, layout.cell_um, CLASS_NAMES.index(cls), geometry)
        if len(centres) >= count:
            return spec, centres
    raise ConfigError(f"no phantom of {geometry.slide_um:g} µm held {count} regions of class '{cls}' in "
                      f"{MAX_ATTEMPTS} seeds; ask for fewer regions or a smaller tile_px")


def pick(centres: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return centres[np.sort(rng.choice(len(centres), size=count, replace=False))]


def cut(rgb: np.ndarray, centre_um: np.ndarray, height_px: int, width_px: int) -> tuple[np.ndarray, int, int]:
    """The source region of the given size around a centre, and its top-left (x, y) in level-0 px."""
    x0 = int(round(centre_um[0] / SOURCE_MPP)) - width_px // 2
    y0 = int(round(centre_um[1] / SOURCE_MPP)) - height_px // 2
    return rgb[y0:y0 + height_px, x0:x0 + width_px], x0, y0


def write_scales(region: np.ndarray, stem: str, root: Path, layout: str, geometry: RegionGeometry) -> None:
    for mpp in geometry.mpps:
        folder = root / MPP_FOLDERS[layout].format(repr(float(mpp)))  # spelled as the authors' scripts do
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(region_at_mpp(region, mpp, geometry.tile_px)).save(folder / f"{stem}.png", compress_level=1)


def write_tcga_ms(root: str | Path, n_slides: int = 6, regions_per_slide: int = 4, tile_px: int = 224,
                  seed: int = 0, classes: Sequence[str] = TCGA_CLASSES,
                  mpps: Sequence[float] = PROFILE_MPPS) -> Path:
    """A TCGA-MS folder: ``mpp_{m}/{slide_uuid}_{x}_{y}.png`` and ``labels.csv``; returns the label file.

    Slide i has label ``classes[i % len(classes)]`` (``label_id`` its position; the extra ``label``
    column names it) and all its regions lie in that class. Fold k tests the slides with i % 5 == k and
    takes those with i % 5 == (k + 1) % 5 as dev. (x, y) is the top-left of the 0.25 mpp view in the
    slide's 0.25 mpp pixels.
    """
    root, geometry = Path(root), RegionGeometry(tile_px, tuple(mpps))
    rng = stream(seed, "tcga-ms")
    rows = []
    for i in range(n_slides):
        cls = classes[i % len(classes)]
        spec, centres = phantom_with(cls, regions_per_slide, seed, f"tcga-ms slide {i}", geometry)
        rgb, _ = render_phantom(spec)
        slide_uuid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        offset = (geometry.source_px - tile_px) // 2
        for centre in pick(centres, regions_per_slide, rng):
            region, x0, y0 = cut(rgb, centre, geometry.source_px, geometry.source_px)
            write_scales(region, f"{slide_uuid}_{x0 + offset}_{y0 + offset}", root, "tcga-ms", geometry)
        folds = {f"fold_{k}": "test" if i % N_FOLDS == k else "dev" if i % N_FOLDS == (k + 1) % N_FOLDS
                 else "train" for k in range(N_FOLDS)}
        rows.append({"slide_uuid": slide_uuid, "label_id": classes.index(cls), "label": cls, **folds})
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return labels


def write_bracs_ms(root: str | Path, n_patients: int = 49, rois_per_wsi: int = 2, tile_px: int = 224,
                   seed: int = 0, mpps: Sequence[float] = PROFILE_MPPS) -> Path:
    """A BRACS-MS folder: ``BRACS_{m}mpp/BRACS_{wsi}_{subtype}_{n}.png`` and the patient sheet
    ``BRACS.csv`` (columns ``WSI Filename``, ``Patient Id``); returns the sheet.

    Patient p's first slide has the subtype ``BRACS_SUBTYPES[p % 7]`` (phantom class
    ``BRACS_CLASSES[p % 7]``); every odd patient has a second slide of another subtype. Slide numbers
    are drawn, so the patients' order in the sorted file names is not their index. Source regions are
    up to ``tile_px // 4`` px larger than the largest crop, and not square, as BRACS regions are.
    The default 49 patients give 7 per subtype: enough for both 5-fold stratified splits.
    """
    root = Path(root)
    geometry = RegionGeometry(tile_px, tuple(mpps), margin_px=tile_px // 4)
    rng = stream(seed, "bracs-ms")
    wsis = []  # (wsi, patient, class index)
    numbers = iter(rng.choice(np.arange(1000, 10000), size=2 * n_patients, replace=False))
    for p in range(n_patients):
        for k in range(1 + p % 2):
            wsis.append((f"BRACS_{next(numbers)}", str(p), (p + 3 * k) % len(BRACS_CLASSES)))
    for cls_index, cls in enumerate(BRACS_CLASSES):
        members = [w for w in wsis if w[2] == cls_index]
        if not members:
            continue
        spec, centres = phantom_with(cls, rois_per_wsi * len(members), seed, f"bracs-ms {cls}", geometry)
        rgb, _ = render_phantom(spec)
        chosen = iter(pick(centres, rois_per_wsi * len(members), rng))
        for wsi, _, _ in members:
            for n in range(rois_per_wsi):
                height, width = geometry.source_px - rng.integers(0, geometry.margin_px + 1, size=2)
                region, _, _ = cut(rgb, next(chosen), int(height), int(width))
                write_scales(region, f"{wsi}_{BRACS_SUBTYPES[cls_index]}_{n}", root, "bracs-ms", geometry)
    sheet = root / "BRACS.csv"
    with sheet.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([BRACS_WSI_COLUMN, BRACS_PATIENT_COLUMN])
        writer.writerows([wsi, patient] for wsi, patient, _ in wsis)
    return sheet


def write_fixture(layout: str, root: str | Path, mpps: Sequence[float] = PROFILE_MPPS, **sizes: int) -> Path:
    """The folder of a ``fixture: true`` benchmark (the benchmark_fixture rule, ``magflow benchmark-fixture``):
    :func:`write_tcga_ms` or :func:`write_bracs_ms` at the sizes of ``FIXTURE_SIZES[layout]``, with
    ``sizes`` on top; returns the label file or patient sheet."""
    from .config import FIXTURE_SIZES

    if layout not in FIXTURE_SIZES:
        raise ConfigError(f"magflow writes benchmark fixtures in the {' and '.join(FIXTURE_SIZES)} layouts, "
                          f"not {layout!r}")
    unknown = sorted(set(sizes) - set(FIXTURE_SIZES[layout]))
    if unknown:
        raise ConfigError(f"a {layout} fixture has no size {', '.join(unknown)}; "
                          f"sizes: {', '.join(FIXTURE_SIZES[layout])}")
    writer = write_tcga_ms if layout == "tcga-ms" else write_bracs_ms
    return writer(root, mpps=tuple(mpps), **{**FIXTURE_SIZES[layout], **sizes})
