"""Synthetic region files with learnable structure, for tests and benchmarks (no slide, no encoder).

A smooth random latent field lives on the finest grid; a tile's embedding at any scale is a fixed
per-scale linear map of the mean latent over the finest cells it covers, plus a little noise. So a
hidden tile is predictable from its neighbours and its parent or children, as in tissue. Tissue is a
random blob mask on the coarsest grid, inherited by finer cells, with a few finer cells dropped.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.ndimage import gaussian_filter

from magflow.aggregate.regions import write_regions
from magflow.aggregate.tile_embed import ScaleEmbeddings

FACTORS = (1, 2, 4)
TARGET_MPPS = (2.0, 1.0, 0.5)
CELL_PX = 224


def synthetic_scales(rng: np.random.Generator, cols: int, rows: int, dim: int = 32, latent: int = 8,
                     factors: tuple[int, ...] = FACTORS, tissue: float = 0.7,
                     drop_fine: float = 0.05) -> list[ScaleEmbeddings]:
    """ScaleEmbeddings (coarsest first) over a cols×rows coarsest grid."""
    finest = factors[-1]
    field = gaussian_filter(rng.normal(size=(rows * finest, cols * finest, latent)), sigma=(finest, finest, 0))
    field /= field.std()
    blob = gaussian_filter(rng.normal(size=(rows, cols)), sigma=1.0)
    coarse_tissue = blob >= np.quantile(blob, 1 - tissue)
    maps = rng.normal(size=(len(factors), latent, dim)) / np.sqrt(latent)
    out = []
    for s, factor in enumerate(factors):
        size = finest // factor
        means = field.reshape(rows * factor, size, cols * factor, size, latent).mean(axis=(1, 3))
        kept = np.repeat(np.repeat(coarse_tissue, factor, 0), factor, 1)
        if s:
            kept &= rng.random(kept.shape) >= drop_fine
        r, c = np.nonzero(kept)
        features = means[r, c] @ maps[s] + 0.05 * rng.normal(size=(len(r), dim))
        mpp = TARGET_MPPS[0] / factor
        grid = np.stack([c, r], 1).astype(np.int64)
        out.append(ScaleEmbeddings(target_mpp=mpp, mpp=mpp, factor=factor, grid_shape=(rows * factor, cols * factor),
                                   cell_um=CELL_PX * mpp, grid=grid, coords=np.rint(grid * CELL_PX * mpp / 0.25)
                                   .astype(np.int64), features=features.astype(np.float32)))
    return out


def write_synthetic_regions(path: str | os.PathLike[str], slide_id: str, seed: int = 0, cols: int = 9,
                            rows: int = 9, dim: int = 32, t: int = 3, factors: tuple[int, ...] = FACTORS,
                            tissue: float = 0.7) -> dict[str, int]:
    """One synthetic slide's region file (slide level 0 at 0.25 mpp)."""
    scales = synthetic_scales(np.random.default_rng(seed), cols, rows, dim, factors=factors, tissue=tissue)
    attrs = {"model": "synthetic", "model_card": {}, "tileset": "synthetic"}
    return write_regions(path, slide_id, scales, t, 0.25, attrs)
