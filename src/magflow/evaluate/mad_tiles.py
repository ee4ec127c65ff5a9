"""The `mad` tile set embedded on its own grids: every kept tile of every scale, each at its own scale.

This is what the MAD paper's evaluation reads (Tables 3-5, Fig 3): a 10× tile's 16 aligned 40×
children are the 40× cells (i·4 + a, j·4 + b) of its grid cell (i, j) — index arithmetic on the
nested grids (``magflow.preprocess.hierarchy``), never a view re-centred on another tile.

One HDF5 file per model: a group per scale (``mpp~{target mpp:.3f}``) with ``slides`` (N, str),
``grid`` (N×2 col,row), ``labels`` (N, int, −1 unlabelled: the majority pixel class of the tile's
square under the slide's label mask) and ``features`` (N×D float32), and the attributes ``mpp``
(achieved), ``target_mpp`` and ``cell_um``. Root attributes: ``class_names`` (JSON), ``splits``
(JSON slide → train/val/test), ``model`` and whatever provenance the writer adds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from magflow.atomic import atomic_path
from magflow.errors import ConfigError


def scale_group(target_mpp: float) -> str:
    return f"mpp~{float(target_mpp):.3f}"


@dataclass(frozen=True)
class MadScale:
    """One scale's kept tiles, in store order per slide."""

    target_mpp: float
    mpp: float                 # achieved
    cell_um: float             # side of a tile in µm
    slides: np.ndarray         # (N,) str
    grid: np.ndarray           # (N, 2) int64 (col, row) on this scale's grid
    labels: np.ndarray         # (N,) int64, −1 where no labelled pixel lies under the tile
    features: np.ndarray       # (N, D) float32

    def __post_init__(self) -> None:
        n = len(self.slides)
        if not (self.grid.shape == (n, 2) and self.labels.shape == (n,) and self.features.shape[0] == n):
            raise ValueError(f"{self.target_mpp:g} mpp: slides {n}, grid {self.grid.shape}, labels "
                             f"{self.labels.shape}, features {self.features.shape} disagree")

    def rows(self, slides: set[str] | list[str] | None = None, labelled: bool = False) -> np.ndarray:
        """Row indices of the tiles on ``slides`` (all slides: None), optionally only labelled ones."""
        keep = np.ones(len(self.slides), bool) if slides is None else np.isin(self.slides, list(slides))
        if labelled:
            keep &= self.labels >= 0
        return np.flatnonzero(keep)


@dataclass(frozen=True)
class MadTiles:
    """Every scale of the tile set (coarsest first), the class names, and the slides' splits."""

    scales: dict[float, MadScale]
    class_names: list[str]
    splits: dict[str, str]                       # slide → "train" / "val" / "test"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def mpps(self) -> list[float]:
        """Target mpps, coarsest first."""
        return sorted(self.scales, reverse=True)

    def scale(self, target_mpp: float) -> MadScale:
        for m, s in self.scales.items():
            if abs(m - target_mpp) <= 1e-6 * max(m, 1.0):
                return s
        raise ConfigError(f"the mad tile embeddings have no {target_mpp:g} mpp scale (scales: {self.mpps}); "
                          "add it to the scales of the tile set the MAD evaluation reads")

    def factor(self, coarse_mpp: float, fine_mpp: float) -> int:
        """Fine cells per coarse cell along each axis (4 for 1.0 → 0.25 mpp); refuses non-nested scales."""
        ratio = coarse_mpp / fine_mpp
        factor = int(round(ratio))
        if factor < 2 or abs(factor - ratio) > 1e-6 * ratio:
            raise ConfigError(f"{coarse_mpp:g} mpp is not a whole multiple (>= 2) of {fine_mpp:g} mpp: the grids "
                              "are not nested, so parents and children cannot be paired")
        return factor

    def slides_in(self, split: str) -> list[str]:
        return sorted(s for s, v in self.splits.items() if v == split)


def write_mad_tiles(path: str | os.PathLike[str], tiles: MadTiles) -> Path:
    """Write ``tiles`` atomically (a partial file never takes the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["class_names"] = json.dumps(list(tiles.class_names))
        f.attrs["splits"] = json.dumps(dict(tiles.splits))
        for key, value in tiles.attrs.items():
            f.attrs[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value, default=str)
        for m in tiles.mpps:
            s = tiles.scales[m]
            g = f.create_group(scale_group(m))
            g.attrs.update({"target_mpp": float(m), "mpp": float(s.mpp), "cell_um": float(s.cell_um)})
            g.create_dataset("slides", data=np.asarray(s.slides, dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("grid", data=np.asarray(s.grid, np.int64))
            g.create_dataset("labels", data=np.asarray(s.labels, np.int64))
            g.create_dataset("features", data=np.asarray(s.features, np.float32))
    return path


def read_mad_tiles(path: str | os.PathLike[str]) -> MadTiles:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no mad tile embeddings here; run the mad_embed step for this model first")
    with h5py.File(path, "r") as f:
        scales = {}
        for name in f:
            g = f[name]
            m = float(g.attrs["target_mpp"])
            scales[m] = MadScale(m, float(g.attrs["mpp"]), float(g.attrs["cell_um"]),
                                 g["slides"].asstr()[...].astype(str), g["grid"][...].astype(np.int64),
                                 g["labels"][...].astype(np.int64), g["features"][...].astype(np.float32))
        attrs = {k: v for k, v in f.attrs.items() if k not in ("class_names", "splits")}
        return MadTiles(scales, json.loads(f.attrs["class_names"]), json.loads(f.attrs["splits"]), attrs)
