"""Region sequences: a slide's tile embeddings at every scale, and the t×t regions cut from them.

A region is a t×t block of the coarsest grid with every aligned tile at the l scales: t²·Σ 4^(i−1)
tokens (189 for t = 3 and 2.0/1.0/0.5 mpp). Token order, scale ids and positions come from
``magflow.preprocess.hierarchy.region``: coarsest scale first, each scale row-major. A token's
``local`` position is its (x, y) cell within the region on its own scale's grid (0 .. t·2^s − 1);
its ``position`` is the top-left of that cell in finest-scale cells (``local`` · 2^(l−1−s)), which is
what the mixer's position tables take. Background (a tile the store did not keep) is a token with
``valid`` False and zero embedding: masked, never dropped, so every region has the same length.

One HDF5 file per slide stores the tile embeddings sparsely, per scale, so regions and the larger
c×c contexts CMEM draws sub-regions from are cut on the fly by index arithmetic:

- ``/scale_{s}`` (s = 0 coarsest): ``embeddings`` N_s×D float32 (contiguous, so it can be memory
  mapped), ``grid`` N_s×2 (col, row), ``coords`` N_s×2 level-0; attrs target_mpp, mpp (achieved),
  factor (cells per coarsest cell), grid_rows, grid_cols, cell_um.
- ``/regions``: ``grid`` R×2 (coarsest col, row of the block's top-left), ``coords`` R×2 (level-0
  top-left), ``present`` R (tokens with a tile).
- root attrs: format, slide_id, tileset, model, model_card, t, target_mpps, mpps, factors,
  feature_dim, n_regions, n_tokens, missing_tokens, provenance.

The listed regions are the non-overlapping t×t blocks aligned to multiples of t on the coarsest grid
that hold at least one kept coarsest tile (a block whose coarsest cells all fall below min_tissue is
not tissue at the region's scale). AB-MIL bags are these regions; pretraining may cut others.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from magflow.aggregate.tile_embed import ScaleEmbeddings
from magflow.atomic import atomic_path
from magflow.errors import ConfigError
from magflow.preprocess import hierarchy

FORMAT = "magflow-regions v1"


@dataclass(frozen=True)
class RegionLayout:
    """The fixed token layout of a t×t region over scales with ``factors`` (1, 2, 4, ... per coarsest cell)."""

    t: int
    factors: tuple[int, ...]
    scale_id: np.ndarray  # N int64, 0 = coarsest
    local: np.ndarray     # N×2 (x, y) within the region on the token's own grid

    def __len__(self) -> int:
        return len(self.scale_id)

    @property
    def cell(self) -> np.ndarray:
        """N: a token's side in finest-scale cells."""
        return self.factors[-1] // np.asarray(self.factors)[self.scale_id]

    @property
    def position(self) -> np.ndarray:
        """N×2: a token's top-left in finest-scale cells (what the mixer takes)."""
        return self.local * self.cell[:, None]

    @property
    def side(self) -> int:
        """The region's side in finest-scale cells."""
        return self.t * self.factors[-1]


def region_layout(t: int, factors: tuple[int, ...] | list[int]) -> RegionLayout:
    """The layout from the tile store's region arithmetic (``hierarchy.region``) on a fully present grid."""
    if t < 1 or not factors or factors[0] != 1:
        raise ConfigError(f"aggregate.t = {t} must be >= 1 and factors {list(factors)} must start at 1 (coarsest)")
    full = [np.zeros((t * f, t * f), np.int64) for f in factors]
    tiles = hierarchy.region(0, 0, t, list(factors), full)
    return RegionLayout(t, tuple(int(f) for f in factors), tiles.scale.astype(np.int64),
                        tiles.position.astype(np.int64))


def aligned_regions(coarse_lookup: np.ndarray, t: int) -> np.ndarray:
    """R×2 (col, row) corners of the t×t blocks aligned to multiples of t with a kept coarsest tile."""
    rows, cols = coarse_lookup.shape
    present = coarse_lookup >= 0
    pad = np.zeros((-(-rows // t) * t, -(-cols // t) * t), bool)
    pad[:rows, :cols] = present
    blocks = pad.reshape(pad.shape[0] // t, t, pad.shape[1] // t, t).any(axis=(1, 3))
    j, i = np.nonzero(blocks)  # row-major
    return np.stack([i * t, j * t], 1).astype(np.int64).reshape(-1, 2)


@dataclass
class RegionTokens:
    """B regions as token sequences (numpy; ``magflow.aggregate.data`` turns them into tensors)."""

    tokens: np.ndarray    # B×N×D float32, zero where not valid
    valid: np.ndarray     # B×N bool: a tile exists
    scale_id: np.ndarray  # N
    position: np.ndarray  # N×2 finest-scale cells
    local: np.ndarray     # N×2 own-scale cells
    cell: np.ndarray      # N side in finest-scale cells


def _json(value: Any) -> Any:
    """HDF5 attributes: numbers and strings as they are, anything else as JSON."""
    if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
        return value
    return json.dumps(value, default=str)


def write_regions(path: str | os.PathLike[str], slide_id: str, scales: list[ScaleEmbeddings], t: int,
                  slide_mpp: float, attrs: dict[str, Any]) -> dict[str, int]:
    """Write a slide's region file atomically (layout in the module docstring); return the counts.

    ``scales`` is coarsest first (as ``embed_store`` returns it); ``slide_mpp`` is level 0's mpp, for
    the regions' level-0 coords.
    """
    factors = [s.factor for s in scales]
    layout = region_layout(t, factors)
    lookups = [_lookup(s.grid, s.grid_shape) for s in scales]
    corners = aligned_regions(lookups[0], t)
    present = _present(corners, layout, lookups)
    coords = np.rint(corners * scales[0].cell_um / slide_mpp).astype(np.int64).reshape(-1, 2)
    dim = scales[0].features.shape[1] if scales else 0
    counts = {"n_regions": len(corners), "n_tokens": len(layout), "present_tokens": int(present.sum()),
              "missing_tokens": int(len(corners) * len(layout) - present.sum())}
    root = {"format": FORMAT, "slide_id": slide_id, "t": t, "target_mpps": [s.target_mpp for s in scales],
            "mpps": [s.mpp for s in scales], "factors": factors, "feature_dim": dim,
            "tiles": [len(s.grid) for s in scales], **counts, **attrs}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in root.items():
            h5.attrs[key] = _json(value)
        for index, scale in enumerate(scales):
            group = h5.create_group(f"scale_{index}")
            group.create_dataset("embeddings", data=scale.features.astype(np.float32).reshape(-1, dim))
            group.create_dataset("grid", data=scale.grid.astype(np.int64).reshape(-1, 2))
            group.create_dataset("coords", data=scale.coords.astype(np.int64).reshape(-1, 2))
            group.attrs.update({"target_mpp": scale.target_mpp, "mpp": scale.mpp, "factor": scale.factor,
                                "grid_rows": scale.grid_shape[0], "grid_cols": scale.grid_shape[1],
                                "cell_um": scale.cell_um})
        group = h5.create_group("regions")
        group.create_dataset("grid", data=corners)
        group.create_dataset("coords", data=coords)
        group.create_dataset("present", data=present.sum(1).astype(np.int64))
    return counts


def _lookup(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    table = np.full(shape, -1, np.int64)
    table[grid[:, 1], grid[:, 0]] = np.arange(len(grid))
    return table


def _rows(corners: np.ndarray, layout: RegionLayout, lookups: list[np.ndarray]) -> np.ndarray:
    """B×N: each token's row in its scale's embeddings, −1 where no tile (also outside the grid)."""
    corners = np.asarray(corners, np.int64).reshape(-1, 2)
    factors = np.asarray(layout.factors)[layout.scale_id]
    cols = corners[:, :1] * factors + layout.local[:, 0]
    rows = corners[:, 1:] * factors + layout.local[:, 1]
    out = np.full(cols.shape, -1, np.int64)
    for s, table in enumerate(lookups):
        on = layout.scale_id == s
        c, r = cols[:, on], rows[:, on]
        inside = (c >= 0) & (r >= 0) & (c < table.shape[1]) & (r < table.shape[0])
        found = np.full(c.shape, -1, np.int64)
        found[inside] = table[r[inside], c[inside]]
        out[:, on] = found
    return out


def _present(corners: np.ndarray, layout: RegionLayout, lookups: list[np.ndarray]) -> np.ndarray:
    return _rows(corners, layout, lookups) >= 0


class SlideRegions:
    """A slide's region file, read for cutting regions (embeddings memory-mapped where possible)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with h5py.File(self.path, "r") as h5:
            self.attrs = dict(h5.attrs)
            if self.attrs.get("format") != FORMAT:
                raise ConfigError(f"{self.path}: not a region file ({FORMAT}); build it with the aggregate "
                                  "regions step")
            n = len(json.loads(self.attrs["factors"]))
            groups = [h5[f"scale_{s}"] for s in range(n)]
            self.embeddings = [_map(self.path, g["embeddings"]) for g in groups]
            self.lookups = [_lookup(g["grid"][...], (int(g.attrs["grid_rows"]), int(g.attrs["grid_cols"])))
                            for g in groups]
            self.regions = h5["regions/grid"][...]
            self.region_coords = h5["regions/coords"][...]

    @property
    def slide_id(self) -> str:
        return str(self.attrs["slide_id"])

    @property
    def t(self) -> int:
        return int(self.attrs["t"])

    @property
    def factors(self) -> tuple[int, ...]:
        return tuple(json.loads(self.attrs["factors"]))

    @property
    def target_mpps(self) -> list[float]:
        return list(json.loads(self.attrs["target_mpps"]))

    @property
    def feature_dim(self) -> int:
        return int(self.attrs["feature_dim"])

    def __len__(self) -> int:
        return len(self.regions)

    @cached_property
    def layout(self) -> RegionLayout:
        return region_layout(self.t, self.factors)

    def layout_for(self, t: int) -> RegionLayout:
        return self.layout if t == self.t else region_layout(t, self.factors)

    def token_rows(self, corners: np.ndarray, t: int | None = None) -> np.ndarray:
        """B×N: each token's row in its scale's embeddings (−1: no tile) for the regions at ``corners``."""
        return _rows(corners, self.layout_for(self.t if t is None else t), self.lookups)

    def fill(self, rows: np.ndarray, out: np.ndarray, batch_rows: np.ndarray | None = None,
             t: int | None = None) -> None:
        """Write the embeddings of ``rows`` (from ``token_rows``) into ``out[batch_rows]`` (zeros stay zero).

        One sorted read per scale, so memory-mapped embeddings are read in file order.
        """
        layout = self.layout_for(self.t if t is None else t)
        batch_rows = np.arange(len(rows)) if batch_rows is None else np.asarray(batch_rows)
        for s, embeddings in enumerate(self.embeddings):
            on = np.flatnonzero(layout.scale_id == s)
            sub = rows[:, on]
            b, n = np.nonzero(sub >= 0)
            if len(b):
                source = sub[b, n]
                order = np.argsort(source, kind="stable")
                out[batch_rows[b[order]], on[n[order]]] = embeddings[source[order]]

    def cut(self, corners: np.ndarray, t: int | None = None) -> RegionTokens:
        """The t×t regions (default: the file's t) at coarsest-grid ``corners`` (B×2 col, row; any integers)."""
        layout = self.layout_for(self.t if t is None else t)
        rows = self.token_rows(corners, layout.t)
        tokens = np.zeros((*rows.shape, self.feature_dim), np.float32)
        self.fill(rows, tokens, t=layout.t)
        return RegionTokens(tokens, rows >= 0, layout.scale_id, layout.position, layout.local, layout.cell)

    def sequences(self) -> RegionTokens:
        """Every listed region of the slide (R×N×D), in the order of ``regions``."""
        return self.cut(self.regions)


def _map(path: Path, dataset: h5py.Dataset) -> np.ndarray:
    """A read-only memory map of a contiguous, unfiltered dataset; otherwise the array read into memory."""
    offset = dataset.id.get_offset()
    if dataset.chunks is None and offset is not None and dataset.size:
        return np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)
    return dataset[...]
