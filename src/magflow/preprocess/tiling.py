"""Nested grids: at every scale, square cells of C px anchored at the slide origin.

A scale's cells are C·mpp µm wide, so when scales differ by whole factors the grids nest exactly:
one cell at 1.0 mpp = 2×2 cells at 0.5 = 4×4 at 0.25. Grid indices are (col, row) = (i, j), the same
order as the level-0 (x, y) coordinates stored beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEST_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ScaleGrid:
    """The grid of one scale: ``mpp`` is the achieved resolution of its pixels."""

    target_mpp: float
    mpp: float
    cell_px: int
    cols: int
    rows: int
    slide_mpp: float

    @property
    def cell_um(self) -> float:
        return self.cell_px * self.mpp

    @property
    def cell_level0(self) -> float:
        """Cell width in level-0 pixels."""
        return self.cell_um / self.slide_mpp

    def coords(self, grid: np.ndarray) -> np.ndarray:
        """Level-0 top-left (x, y) of cells given as (col, row) rows; rounded to whole pixels (CLAM style)."""
        return np.rint(grid.astype(np.float64) * self.cell_level0).astype(np.int64)


def make_grid(target_mpp: float, achieved_mpp: float, cell_px: int, slide_mpp: float,
              slide_size: tuple[int, int]) -> ScaleGrid:
    """The full cells of a scale that lie inside the slide."""
    width_um, height_um = slide_size[0] * slide_mpp, slide_size[1] * slide_mpp
    cell_um = cell_px * achieved_mpp
    cols = math.floor(width_um / cell_um + NEST_TOLERANCE)
    rows = math.floor(height_um / cell_um + NEST_TOLERANCE)
    return ScaleGrid(target_mpp, achieved_mpp, cell_px, cols, rows, slide_mpp)


def whole_factor(ratio: float, what: str) -> int:
    """``ratio`` as a whole number of cells per axis; a ValueError naming ``what`` if the grids do not nest."""
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-6 * ratio:
        raise ValueError(f"{what} do not nest (ratio {ratio:.6g})")
    return factor


def nest_factor(coarse: ScaleGrid, fine: ScaleGrid) -> int:
    """How many fine cells span one coarse cell along each axis; an error if the grids do not nest."""
    return whole_factor(coarse.cell_um / fine.cell_um, f"grids at {coarse.mpp:g} and {fine.mpp:g} mpp")


def _cell_sums(values: np.ndarray, cells: int, cell_px: float, axis: int) -> np.ndarray:
    """Integral of ``values`` (unit-width pixels along ``axis``) over cells [c·w, (c+1)·w).

    A pixel partly inside a cell counts by its overlap; beyond the array counts as zero. Evaluates
    the piecewise-linear running sum at the cell edges, so it is linear in the array's size.
    """
    pixels = values.shape[axis]
    shape = list(values.shape)
    shape[axis] = pixels + 1
    running = np.zeros(shape, np.float64 if values.dtype.kind == "f" else np.int32)  # exact: < 2³¹ px
    np.cumsum(values, axis=axis, out=running[1:] if axis == 0 else running[:, 1:])
    edges = np.minimum(np.arange(cells + 1) * cell_px, pixels)
    whole = np.minimum(np.floor(edges).astype(np.int64), pixels - 1)
    frac = (edges - whole).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    at_edges = np.take(running, whole, axis=axis) + frac * np.take(values, whole, axis=axis)
    return np.diff(at_edges, axis=axis)


def tissue_fractions(mask: np.ndarray, mask_mpp: float, grid: ScaleGrid) -> np.ndarray:
    """Fraction of each cell covered by tissue, rows × cols: the exact area average of the mask.

    Area outside the mask counts as background. Being a linear average, a coarse cell's fraction
    equals the mean of its nested children's.
    """
    cell = grid.cell_um / mask_mpp  # cell width in mask pixels (may be fractional)
    if mask.size == 0:
        return np.zeros((grid.rows, grid.cols), np.float32)
    per_row = _cell_sums(mask.astype(np.uint8), grid.cols, cell, axis=1)  # mask rows × cols
    covered = _cell_sums(per_row, grid.rows, cell, axis=0)                 # rows × cols
    return (covered / (cell * cell)).astype(np.float32)


def select_cells(fractions: np.ndarray, min_tissue: float, cap: int | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(col, row) of cells with tissue ≥ ``min_tissue``, at most ``cap`` of them drawn with ``rng``.

    Returns the kept cells in raster order and how many were available.
    """
    rows, cols = np.nonzero(fractions >= min_tissue)
    grid = np.stack([cols, rows], axis=1).astype(np.int64)
    available = len(grid)
    if cap is not None and available > cap:
        keep = np.sort(rng.choice(available, size=cap, replace=False))
        grid = grid[keep]
    return grid, available
