"""The HDF5 tile store: one file per slide and tile set, one group per scale.

Each group ``mpp_{target:.3f}`` holds ``images`` (N×S×S×3 uint8, one chunk per tile), ``coords``
(level-0 top-left x, y of the cell, CLAM/TRIDENT style), ``grid`` ((col, row) on that scale's grid)
and ``tissue`` (fraction). Group attributes give the achieved mpp and how the pixels were made; root
attributes give the slide's identity and mpp source, the tile set's parameters and provenance.

A tile set with ``jpeg_quality`` stores ``images_jpeg`` instead of ``images``: N variable-length
uint8 arrays, each one tile's JPEG (4:4:4, no chroma subsampling), with group attributes
``encoding = "jpeg"`` and ``jpeg_quality``. Read tiles through :class:`TileImages`, which serves
both encodings as N×S×S×3 uint8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import imagecodecs
import numpy as np

from magflow.atomic import atomic_path
from magflow.h5attrs import write_attrs
from magflow.preprocess import hierarchy
from magflow.preprocess.tiling import whole_factor


def group_name(target_mpp: float) -> str:
    return f"mpp_{target_mpp:.3f}"


@dataclass
class ScaleContent:
    """What one scale's group will hold, known before any pixel is read."""

    attrs: dict[str, Any]
    grid: np.ndarray    # (N, 2) col, row
    coords: np.ndarray  # (N, 2) level-0 x, y
    tissue: np.ndarray  # (N,)


def encode_jpeg(patch: np.ndarray, quality: int) -> np.ndarray:
    """One S×S×3 uint8 tile as a JPEG stream (4:4:4, so colour keeps full resolution), as uint8."""
    return np.frombuffer(imagecodecs.jpeg8_encode(np.ascontiguousarray(patch), level=quality,
                                                  subsampling="444"), np.uint8)


class StoreWriter:
    """Create a store under a temporary name; it appears at ``path`` only when closed without error.

    With ``jpeg_quality``, :meth:`write` takes each tile already encoded by :func:`encode_jpeg`.
    """

    def __init__(self, path: str | os.PathLike[str], root_attrs: dict[str, Any],
                 scales: list[ScaleContent], source_px: int, jpeg_quality: int | None = None) -> None:
        self._atomic = atomic_path(path)
        tmp = self._atomic.__enter__()
        h5 = None
        try:
            h5 = self._h5 = h5py.File(tmp, "w")
            self._create(root_attrs, scales, source_px, jpeg_quality)
        except BaseException as error:
            if h5 is not None:
                with suppress(Exception):  # the error being raised says more
                    h5.close()
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise

    def _create(self, root_attrs: dict[str, Any], scales: list[ScaleContent], source_px: int,
                jpeg_quality: int | None) -> None:
        write_attrs(self._h5, {key: value if isinstance(value, (str, int, float)) else json.dumps(value, default=str)
                               for key, value in root_attrs.items()})
        self.images: list[h5py.Dataset] = []
        for content in scales:
            group = self._h5.create_group(group_name(content.attrs["target_mpp"]))
            write_attrs(group, content.attrs)
            n = len(content.grid)
            group.create_dataset("grid", data=content.grid.astype(np.int64).reshape(n, 2))
            group.create_dataset("coords", data=content.coords.astype(np.int64).reshape(n, 2))
            group.create_dataset("tissue", data=content.tissue.astype(np.float32).reshape(n))
            if jpeg_quality is None:
                shape = (n, source_px, source_px, 3)
                chunks = (1, source_px, source_px, 3) if n else None
                self.images.append(group.create_dataset("images", shape=shape, dtype=np.uint8, chunks=chunks))
            else:
                images = group.create_dataset("images_jpeg", shape=(n,), dtype=h5py.vlen_dtype(np.uint8))
                write_attrs(images, {"tile_shape": json.dumps([source_px, source_px, 3])})
                self.images.append(images)
        self.jpeg = jpeg_quality is not None

    def write(self, scale: int, row: int, patch: np.ndarray) -> None:
        if self.jpeg:
            self.images[scale][row] = patch
        else:
            self.images[scale].id.write_direct_chunk((row, 0, 0, 0), np.ascontiguousarray(patch))

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._h5.close()  # flushes: a full disk may first show here
        except BaseException as error:
            if exc is None:
                self._atomic.__exit__(type(error), error, error.__traceback__)
                raise
        self._atomic.__exit__(exc_type, exc, tb)


class TileImages:
    """One scale's source patches as N×S×S×3 uint8, whether stored raw or as JPEG.

    ``images[row]`` is one S×S×3 tile, ``images[a:b]`` or ``images[rows]`` an n×S×S×3 stack.
    """

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.jpeg = group.attrs.get("encoding", "raw") == "jpeg"
        if self.jpeg:
            self._data = group["images_jpeg"]
            tile = tuple(json.loads(self._data.attrs["tile_shape"]))
            self.shape = (len(self._data), *tile)
        else:
            self._data = group["images"]
            self.shape = self._data.shape
            plist = self._data.id.get_create_plist()
            self._direct = self._data.chunks == (1, *self.shape[1:]) and plist.get_nfilters() == 0

    def __len__(self) -> int:
        return self.shape[0]

    def _one(self, row: int) -> np.ndarray:
        if self.jpeg:
            try:
                return imagecodecs.jpeg8_decode(self._data[row])
            except Exception as error:  # noqa: BLE001 - any codec failure means a damaged store
                raise ValueError(f"{self.group.file.filename}: tile {row} of {self.group.name} is not a readable "
                                 f"JPEG ({error}); the store is damaged: delete it and extract it again") from error
        if self._direct:  # one chunk per tile, unfiltered: its bytes are the tile
            tile = np.empty(self.shape[1:], np.uint8)
            self._data.id.read_direct_chunk((row, 0, 0, 0), out=tile.reshape(-1))
            return tile
        return self._data[row]

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"tile {key} out of range for {len(self)} tiles in {self.group.name}")
            return self._one(row)
        rows = range(len(self))[key] if isinstance(key, slice) else [int(r) for r in key]
        if not self.jpeg and isinstance(key, slice):
            return self._data[key]
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for n, row in enumerate(rows):
            out[n] = self._one(row)
        return out


class TileStore:
    """Read access to one store file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.h5 = h5py.File(self.path, "r")
        self.attrs = dict(self.h5.attrs)
        self._lookups: dict[float, np.ndarray] = {}

    @property
    def scales(self) -> list[float]:
        """Target mpps of the stored scales, finest first."""
        return sorted(float(g.attrs["target_mpp"]) for g in self.h5.values())

    def group(self, target_mpp: float) -> h5py.Group:
        return self.h5[group_name(target_mpp)]

    def images(self, target_mpp: float) -> TileImages:
        """The scale's source patches, decoded if the store holds JPEG."""
        return TileImages(self.group(target_mpp))

    def __len__(self) -> int:
        return sum(len(g["grid"]) for g in self.h5.values())

    def json_attr(self, key: str) -> Any:
        return json.loads(self.attrs[key])

    def lookup(self, target_mpp: float) -> np.ndarray:
        """rows × cols array: the store row of each grid cell, −1 where no tile was kept."""
        if target_mpp not in self._lookups:
            group = self.group(target_mpp)
            table = np.full((int(group.attrs["grid_rows"]), int(group.attrs["grid_cols"])), -1, np.int64)
            grid = group["grid"][...]
            table[grid[:, 1], grid[:, 0]] = np.arange(len(grid))
            self._lookups[target_mpp] = table
        return self._lookups[target_mpp]

    def factor(self, coarse_mpp: float, fine_mpp: float) -> int:
        """How many fine cells span one coarse cell along each axis (grids must nest)."""
        coarse, fine = self.group(coarse_mpp).attrs, self.group(fine_mpp).attrs
        ratio = (coarse["mpp"] * coarse["cell_px"]) / (fine["mpp"] * fine["cell_px"])
        return whole_factor(ratio, f"{self.path}: scales {coarse_mpp} and {fine_mpp}")

    def children(self, coarse_mpp: float, fine_mpp: float, row: int) -> np.ndarray:
        """Store rows of the aligned children (k order) of tile ``row`` at ``coarse_mpp``; −1 if missing."""
        i, j = self.group(coarse_mpp)["grid"][row]
        cells = hierarchy.children(int(i), int(j), self.factor(coarse_mpp, fine_mpp))
        table = self.lookup(fine_mpp)
        inside = (cells[:, 1] < table.shape[0]) & (cells[:, 0] < table.shape[1])
        found = np.full(len(cells), -1, np.int64)
        found[inside] = table[cells[inside, 1], cells[inside, 0]]
        return found

    def region(self, i0: int, j0: int, t: int, targets: list[float]) -> hierarchy.RegionTiles:
        """All tiles of the t×t block at (i0, j0) of the coarsest of ``targets``, at every target."""
        order = sorted(targets, reverse=True)
        factors = [self.factor(order[0], m) for m in order]
        return hierarchy.region(i0, j0, t, factors, [self.lookup(m) for m in order])

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> TileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
