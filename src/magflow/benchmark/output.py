"""The benchmark embeddings file, ``results/benchmarks/{benchmark}/{model}.h5``: one row per image
(region), the same rows at every mpp, in sorted ``image_id`` order.

Root datasets (N = images):

- ``image_id``, ``label``, ``group``, ``slide`` (N variable-length UTF-8 strings): as in the
  benchmark's table (see :mod:`magflow.benchmark.layouts`)
- ``label_id`` (N int64)
- ``folds/fold_0`` … ``folds/fold_4`` (N strings): ``train``, ``dev``, ``test`` or ``""`` (left out)

Groups ``mpp_{m:.3f}``, one per mpp m: ``features`` (N×D float32) and ``path`` (N strings: the
image file each row was read from); attribute ``mpp``.

Root attributes (scalars as they are, anything else as JSON text, as the tile-set embeddings file):
``benchmark``, ``layout``, ``root``, ``folds`` (where the folds came from), ``mpps``,
``standard_mpps``, ``model``, ``model_card``, ``features`` (``pooled``, ``cls`` or
``cls+mean_patch``), ``embed_dim``, ``feature_dim``, ``mean`` and ``std`` (the normalisation
applied), ``native_px``, ``input_px``, ``resized``, ``input_size`` (why that size), ``resize`` (the
filter, when resized), ``precision``, ``device``, ``images_per_s`` and ``provenance``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from magflow.atomic import atomic_path
from magflow.embed.output import STRINGS
from magflow.embed.output import _attr as attr_value
from magflow.embed.output import _json_or_value as attr_read
from magflow.preprocess.store import group_name

from .layouts import FOLD_COLUMNS

TEXT_COLUMNS = ("image_id", "label", "group", "slide")


@dataclass
class BenchmarkEmbeddings:
    image_id: np.ndarray
    label: np.ndarray
    label_id: np.ndarray
    group: np.ndarray
    slide: np.ndarray
    folds: dict[str, np.ndarray]        # fold_0 ... fold_4 → N parts
    features: dict[float, np.ndarray]   # mpp → N×D
    paths: dict[float, np.ndarray]      # mpp → N image files
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def mpps(self) -> list[float]:
        return sorted(self.features)


def write_benchmark_embeddings(path: str | os.PathLike[str], emb: BenchmarkEmbeddings) -> Path:
    """Write the file under a temporary name; it appears at ``path`` only when complete."""
    n = len(emb.image_id)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for column in TEXT_COLUMNS:
            h5.create_dataset(column, data=np.asarray(getattr(emb, column), dtype=object).reshape(n), dtype=STRINGS)
        h5.create_dataset("label_id", data=np.asarray(emb.label_id, np.int64).reshape(n))
        folds = h5.create_group("folds")
        for column in FOLD_COLUMNS:
            folds.create_dataset(column, data=np.asarray(emb.folds[column], dtype=object).reshape(n), dtype=STRINGS)
        for mpp in emb.mpps:
            group = h5.create_group(group_name(mpp))
            group.create_dataset("features", data=np.asarray(emb.features[mpp], np.float32))
            group.create_dataset("path", data=np.asarray(emb.paths[mpp], dtype=object).reshape(n), dtype=STRINGS)
            group.attrs["mpp"] = float(mpp)
        for key, value in emb.attrs.items():
            h5.attrs[key] = attr_value(value)
    return Path(path)


def read_benchmark_embeddings(path: str | os.PathLike[str]) -> BenchmarkEmbeddings:
    """The whole file in memory, JSON attributes decoded."""
    with h5py.File(path, "r") as h5:
        groups = {float(g.attrs["mpp"]): g for name, g in h5.items() if name.startswith("mpp_")}
        return BenchmarkEmbeddings(
            **{column: h5[column].asstr()[...] for column in TEXT_COLUMNS},
            label_id=h5["label_id"][...],
            folds={column: h5["folds"][column].asstr()[...] for column in FOLD_COLUMNS},
            features={m: g["features"][...] for m, g in sorted(groups.items())},
            paths={m: g["path"].asstr()[...] for m, g in sorted(groups.items())},
            attrs={k: attr_read(v) for k, v in h5.attrs.items()})
