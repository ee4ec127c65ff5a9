"""The embeddings file, ``results/embeddings/{model}/{tileset}.h5``: one row per anchor tile, one group per mpp.

Root datasets (N = tiles, the same rows at every mpp):

- ``tile_id`` (N int64): the tile's id, its row (slides in input order, then anchor store rows)
- ``slide`` (N variable-length UTF-8 strings): slide id
- ``grid`` (N×2 int64): anchor grid col, row
- ``coords`` (N×2 int64): level-0 x, y of the anchor cell's top-left (CLAM style)
- ``label`` (N int64): class index into ``class_names``, −1 where unknown

Groups ``mpp_{t:.3f}``, one per target mpp t:

- ``features`` (N×D float32): D = embed_dim (CLS), or 2·embed_dim (CLS then mean patch token); zero
  where not valid
- ``valid`` (N bool): the tile has a view at t
- ``mpp_achieved`` (N float32): the view's achieved mpp, NaN where not valid
- attributes ``target_mpp``, ``source_mpp`` (nominal mpp of the source scale, −1 if none),
  ``crop_px`` (JSON: slide → source window side), ``resample`` (how the source scale was chosen),
  ``filter`` (JSON: slide → what made the view from the window), ``valid`` and ``skipped`` (counts),
  ``centre_error_px`` (largest window-centre offset from the tile centre, source pixels)

Root attributes (scalars as they are, anything else as JSON text): ``model``, ``model_card``,
``tileset``, ``anchor_mpp``, ``mpps``, ``counts`` ({"0.25": {"valid": n, "skipped": n}, ...}),
``source_mpp`` ({"0.375": 0.25, ...}), ``complete`` (tiles valid at every mpp), ``slides`` (per
slide: anchors, valid per mpp, and why it has none), ``class_names``, ``features`` ("cls" or
"cls+mean_patch"), ``embed_dim``, ``feature_dim``, ``precision``, ``device``, ``cell_px``,
``protocol``, ``resample`` (``finest`` or ``nearest_scale``) and ``view_filter`` (see
``magflow.embed.protocol``) and ``provenance``.
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
from magflow.preprocess.store import group_name

STRINGS = h5py.string_dtype("utf-8")


@dataclass
class Embeddings:
    tile_id: np.ndarray
    slide: np.ndarray
    grid: np.ndarray
    coords: np.ndarray
    label: np.ndarray
    class_names: list[str]
    features: dict[float, np.ndarray]         # mpp → N×D
    valid: dict[float, np.ndarray]            # mpp → N bool
    mpp_achieved: dict[float, np.ndarray]     # mpp → N
    group_attrs: dict[float, dict[str, Any]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def mpps(self) -> list[float]:
        return sorted(self.features)

    def complete(self) -> np.ndarray:
        """Tiles valid at every mpp (the rows a same-tiles RankMe profile can use)."""
        return np.logical_and.reduce([self.valid[m] for m in self.mpps]) if self.mpps else np.zeros(0, bool)


def _attr(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, np.integer, np.floating)) else json.dumps(value,
                                                                                                        default=str)


def write_embeddings(path: str | os.PathLike[str], emb: Embeddings) -> Path:
    """Write the file under a temporary name; it appears at ``path`` only when complete."""
    n = len(emb.tile_id)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("tile_id", data=np.asarray(emb.tile_id, np.int64).reshape(n))
        h5.create_dataset("slide", data=np.asarray(emb.slide, dtype=object).reshape(n), dtype=STRINGS)
        h5.create_dataset("grid", data=np.asarray(emb.grid, np.int64).reshape(n, 2))
        h5.create_dataset("coords", data=np.asarray(emb.coords, np.int64).reshape(n, 2))
        h5.create_dataset("label", data=np.asarray(emb.label, np.int64).reshape(n))
        for mpp in emb.mpps:
            group = h5.create_group(group_name(mpp))
            group.create_dataset("features", data=np.asarray(emb.features[mpp], np.float32))
            group.create_dataset("valid", data=np.asarray(emb.valid[mpp], bool).reshape(n))
            group.create_dataset("mpp_achieved", data=np.asarray(emb.mpp_achieved[mpp], np.float32).reshape(n))
            for key, value in emb.group_attrs.get(mpp, {}).items():
                group.attrs[key] = _attr(value)
        for key, value in {**emb.attrs, "class_names": list(emb.class_names)}.items():
            h5.attrs[key] = _attr(value)
    return Path(path)


def _json_or_value(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value


def read_embeddings(path: str | os.PathLike[str]) -> Embeddings:
    """The whole file in memory, JSON attributes decoded."""
    with h5py.File(path, "r") as h5:
        attrs = {k: _json_or_value(v) for k, v in h5.attrs.items()}
        mpps = sorted(float(g.attrs["target_mpp"]) for g in h5.values() if isinstance(g, h5py.Group))
        groups = {m: h5[group_name(m)] for m in mpps}
        return Embeddings(
            tile_id=h5["tile_id"][...], slide=h5["slide"].asstr()[...], grid=h5["grid"][...],
            coords=h5["coords"][...], label=h5["label"][...], class_names=list(attrs.pop("class_names")),
            features={m: g["features"][...] for m, g in groups.items()},
            valid={m: g["valid"][...] for m, g in groups.items()},
            mpp_achieved={m: g["mpp_achieved"][...] for m, g in groups.items()},
            group_attrs={m: {k: _json_or_value(v) for k, v in g.attrs.items()} for m, g in groups.items()},
            attrs=attrs)
