"""The cross-scale slide label: cell type and architecture planted so that only their combination tells it.

A phantom with ``cross_scale`` 0 or 1 keeps its tissue and its stroma, glandular and banded regions;
its sheet and nest regions (the zone the classes small_dense, large_sparse and lobular would fill)
are planted instead with one of two arrangements:

- ``cross_scale`` 1: large cells in nests (class ``rare``) and small cells in sheets (``small_dense``);
- ``cross_scale`` 0: small cells in nests (``lobular``) and large cells in sheets (``large_sparse``).

Which part of the zone becomes nests and which sheets comes from the seed alone (a smooth random
field split at a threshold), never from the value, so one seed gives the identical architecture
for both values. The threshold balances the cell compartments: the nest epithelium where nuclei
are centred covers as many grid cells as the sheets do (to one cell), so each cell type covers the
same area, and gets the same number of nuclei on average, whichever the value.

Ground truth at one scale (computed on the layout, no pixels drawn):

- cell scale, ``cell_map``: per grid cell, glass, stroma (tissue outside any cell compartment, the
  septa between nests included), small cells or large cells; the architecture is not in it;
- tissue scale, ``architecture_map``: per grid cell, glass, stroma, sheet, glands, bands or nests;
  the cell type is not in it.

A slide's area fractions of either map are the same for both values (the architecture map is
identical, the cell map's fractions equal up to the smoothing of compartment edges), so neither
scale alone tells the label. Their co-occurrence does: large cells in nests iff the value is 1.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .design import CLASS_INDEX, CLASSES, PhantomParams
from .noise import smooth_noise

ZONE_CLASSES: tuple[str, ...] = ("small_dense", "large_sparse", "lobular")
PLANTED: dict[int, dict[str, str]] = {
    1: {"nests": "rare", "sheet": "small_dense"},
    0: {"nests": "lobular", "sheet": "large_sparse"},
}
PATCH_SIGMA_UM = 110.0  # smoothness of the nest / sheet split: patches a few nests across
MIN_ZONE_FRACTION = 0.1  # of the tissue: less and the label would rest on a few nests
CELL_VALUES: tuple[str, ...] = ("glass", "stroma", "small", "large")
ARCHITECTURE_VALUES: tuple[str, ...] = ("glass", "stroma", "sheet", "glands", "bands", "nests")


def plant_cross_scale(
    rng: np.random.Generator, labels: np.ndarray, value: int, nest_epi: np.ndarray, sd_tissue: np.ndarray,
    cell_um: float, params: PhantomParams,
) -> None:
    """Replace the sheet and nest regions of ``labels`` (in place) with the arrangement of ``value``.

    ``nest_epi`` is the nest architecture's signed distance to its cell compartment over the whole
    grid and ``sd_tissue`` the signed distance to the tissue edge (both µm, unsmoothed).
    """
    if value not in PLANTED:
        raise ConfigError(f"cross_scale must be 0 or 1, got {value!r}")
    zone = np.isin(labels, [CLASS_INDEX[name] for name in ZONE_CLASSES])
    tissue = int((labels > 0).sum())
    if tissue == 0 or zone.sum() < max(2, MIN_ZONE_FRACTION * tissue):
        raise ConfigError(
            f"a cross-scale phantom needs sheet and nest regions over at least {MIN_ZONE_FRACTION:.0%} of its "
            f"tissue; this seed and size give {zone.sum() / max(tissue, 1):.1%}: give the slide another `seed` "
            "or a larger width_um/height_um under phantom.per_slide")
    nest_side = split_zone(rng, zone, nest_epi, sd_tissue, cell_um, params)
    labels[nest_side] = CLASS_INDEX[PLANTED[value]["nests"]]
    labels[zone & ~nest_side] = CLASS_INDEX[PLANTED[value]["sheet"]]


def split_zone(
    rng: np.random.Generator, zone: np.ndarray, nest_epi: np.ndarray, sd_tissue: np.ndarray, cell_um: float,
    params: PhantomParams,
) -> np.ndarray:
    """The part of ``zone`` that becomes nests: where a smooth random field is highest, up to the
    threshold at which the nest cell compartment and the sheets hold equally many grid cells."""
    field = smooth_noise(rng, zone.shape, PATCH_SIGMA_UM / cell_um)
    cells = np.flatnonzero(zone.ravel())
    order = cells[np.argsort(-field.ravel()[cells], kind="stable")]
    margin = params.nucleus_margin_um
    in_tissue = sd_tissue.ravel()[order] > margin
    nest_cells = np.concatenate([[0], np.cumsum(in_tissue & (nest_epi.ravel()[order] > margin))])
    sheet_cells = in_tissue.sum() - np.concatenate([[0], np.cumsum(in_tissue)])
    k = int(np.argmin(np.abs(nest_cells - sheet_cells)))
    nest_side = np.zeros(zone.size, bool)
    nest_side[order[:k]] = True
    return nest_side.reshape(zone.shape)


def cell_map(labels: np.ndarray, sd_epithelium: np.ndarray, sd_tissue: np.ndarray,
             params: PhantomParams = PhantomParams()) -> np.ndarray:
    """Cell-scale ground truth: index into CELL_VALUES per grid cell (the cells where nuclei are centred)."""
    kinds = np.array([CELL_VALUES.index(c.cells) if c.cells in ("small", "large") else 0 for c in CLASSES])
    compartment = (sd_epithelium > params.nucleus_margin_um) & (sd_tissue > params.nucleus_margin_um)
    out = np.where(labels > 0, CELL_VALUES.index("stroma"), CELL_VALUES.index("glass")).astype(np.uint8)
    cell_kind = kinds[labels]
    take = compartment & (cell_kind > 0)
    out[take] = cell_kind[take]
    return out


def architecture_map(labels: np.ndarray) -> np.ndarray:
    """Tissue-scale ground truth: index into ARCHITECTURE_VALUES per grid cell (no cell type)."""
    arch = np.array([ARCHITECTURE_VALUES.index(c.architecture) if c.architecture in ARCHITECTURE_VALUES else
                     ARCHITECTURE_VALUES.index("stroma") for c in CLASSES], np.uint8)
    out = arch[labels]
    out[labels == 0] = ARCHITECTURE_VALUES.index("glass")
    return out


def scale_statistics(labels: np.ndarray, sd_epithelium: np.ndarray, sd_tissue: np.ndarray,
                     params: PhantomParams = PhantomParams()) -> dict[str, dict[str, float]]:
    """Area fractions (of the tissue) of each scale's ground truth, and of their co-occurrences."""
    tissue = max(int((labels > 0).sum()), 1)
    cells = cell_map(labels, sd_epithelium, sd_tissue, params)
    arch = architecture_map(labels)
    class_cells = np.array([c.cells for c in CLASSES])[labels]
    return {
        "cells": {name: float((cells == i).sum() / tissue) for i, name in enumerate(CELL_VALUES) if i},
        "architecture": {name: float((arch == i).sum() / tissue)
                         for i, name in enumerate(ARCHITECTURE_VALUES) if i},
        "joint": {f"{kind}_in_{where}": float(((class_cells == kind) & (arch == ARCHITECTURE_VALUES.index(where)))
                                              .sum() / tissue)
                  for kind in ("small", "large") for where in ("sheet", "nests")},
    }
