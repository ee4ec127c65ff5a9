"""Parents, children and regions across nested grids, as index arithmetic on (col, row) indices.

With a factor r between a coarse and a fine grid (r = 4 for 4.0 → 1.0 mpp), coarse cell (i, j) holds
the r×r fine cells (i·r + a, j·r + b); k = b·r + a is the child's linear index in that sub-grid
(MAD's (i, j, k) index; grandchildren add m the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def children(i: int, j: int, factor: int = 4) -> np.ndarray:
    """The factor² fine cells of coarse cell (i, j), as (col, row) rows ordered by k."""
    k = np.arange(factor * factor)
    return np.stack([i * factor + k % factor, j * factor + k // factor], axis=1)


def parent(i: int, j: int, factor: int = 4) -> tuple[int, int, int]:
    """(parent col, parent row, k) of fine cell (i, j)."""
    return i // factor, j // factor, (j % factor) * factor + (i % factor)


def grandchildren(i: int, j: int, factor: int = 4) -> np.ndarray:
    """(col, row, k, m) for the factor⁴ cells two levels down, ordered by (k, m)."""
    rows = []
    for k, (ci, cj) in enumerate(children(i, j, factor)):
        for m, (gi, gj) in enumerate(children(int(ci), int(cj), factor)):
            rows.append((gi, gj, k, m))
    return np.asarray(rows, np.int64)


def region_size(t: int, levels: int, factor: int = 2) -> int:
    """s(t, l) = t²·Σ_{i=1..l} (factor²)^(i−1): tokens in a t×t region over l nested scales."""
    return t * t * sum((factor * factor) ** i for i in range(levels))


@dataclass(frozen=True)
class RegionTiles:
    """All tiles of a region: one row per tile, coarsest scale first."""

    scale: np.ndarray     # scale id, 0 = coarsest
    grid: np.ndarray      # (col, row) on that scale's grid
    position: np.ndarray  # (x, y) within the region on that scale's grid, 0 .. t·factor^s − 1
    index: np.ndarray     # row in that scale's store group, −1 where the tile is missing (background)

    @property
    def present(self) -> np.ndarray:
        return self.index >= 0


def region(i0: int, j0: int, t: int, factors: list[int], lookups: list[np.ndarray]) -> RegionTiles:
    """The t×t block at (i0, j0) of the coarsest grid and all aligned tiles at every scale.

    ``factors[s]`` is how many cells of scale s span one coarsest cell (1 for the coarsest);
    ``lookups[s]`` maps (row, col) on scale s to the store row or −1 (see ``TileStore.lookup``).
    """
    scale, grid, position, index = [], [], [], []
    for s, (factor, lookup) in enumerate(zip(factors, lookups)):
        n = t * factor
        py, px = np.mgrid[0:n, 0:n]
        cols, rows = i0 * factor + px.ravel(), j0 * factor + py.ravel()
        inside = (rows < lookup.shape[0]) & (cols < lookup.shape[1])
        found = np.full(n * n, -1, np.int64)
        found[inside] = lookup[rows[inside], cols[inside]]
        scale.append(np.full(n * n, s))
        grid.append(np.stack([cols, rows], 1))
        position.append(np.stack([px.ravel(), py.ravel()], 1))
        index.append(found)
    return RegionTiles(np.concatenate(scale), np.concatenate(grid), np.concatenate(position),
                       np.concatenate(index))
