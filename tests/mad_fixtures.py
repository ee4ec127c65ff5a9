"""A tiny MAD tile store made by the real extraction: 4.0 / 1.0 / 0.25 mpp, nested 4×4, 32 px cells.

The slide is 2048 px at 0.25 mpp (512 µm): 4×4 parents at 4.0 mpp, each with 16 children at 1.0 mpp.
The tissue mask (8 mpp, 4 mask pixels per 1.0 mpp cell) makes some children background:

- parent (0, 0) at 4.0 mpp keeps only 3 children at 1.0 (too few for an item: skipped);
- parent (1, 0) at 4.0 mpp keeps 10 of its 16 children (missing ones are replaced from the rest);
- the 1.0 mpp cell (8, 0) keeps only 2 children at 0.25 (skipped in the 10x→40x transition).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles
from magflow.preprocess.mask_store import write_mask
from magflow.preprocess.tissue import TissueMask
from wsi_factory import write_wsi

CELL_PX = 32
SCALES = [4.0, 1.0, 0.25]
FEW_CHILDREN_PARENT = (0, 0)     # at 4.0 mpp: 3 children
PARTIAL_PARENT = (1, 0)          # at 4.0 mpp: 10 children
FEW_GRANDCHILDREN_CELL = (8, 0)  # at 1.0 mpp: 2 children at 0.25


def texture(size: int, seed: int = 0) -> np.ndarray:
    """A colour texture that changes every 16 px at 0.25 mpp: every 4.0 mpp pixel differs from its neighbours."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 230, (size // 16 + 2, size // 16 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size + 32, size + 32), Image.Resampling.BICUBIC))[:size, :size]


def mad_mask() -> np.ndarray:
    mask = np.ones((64, 64), bool)
    mask[0:16, 0:16] = False
    for a, b in [(0, 0), (1, 0), (2, 1)]:
        mask[b * 4:(b + 1) * 4, a * 4:(a + 1) * 4] = True
    mask[0:16, 16:32] = False
    for k in range(10):
        a, b = k % 4, k // 4
        mask[b * 4:(b + 1) * 4, 16 + a * 4:16 + (a + 1) * 4] = True
    mask[0:4, 32:36] = False
    mask[0, 32] = mask[0, 33] = True
    return mask


def write_mad_store(root: Path, slide_id: str = "s", seed: int = 0) -> Path:
    slide = write_wsi(root / f"{slide_id}.svs", texture(2048, seed), mpp=0.25, levels=5)
    write_mask(root / f"{slide_id}.mask.h5", TissueMask(mad_mask(), 8.0, 0.1), {"slide_id": slide_id}, {})
    out = root / f"{slide_id}.h5"
    extract_tiles(slide, slide_id, root / f"{slide_id}.mask.h5", out,
                  TileSetParams("mad", SCALES, CELL_PX, CELL_PX, min_tissue=0.1), progress=False)
    return out
