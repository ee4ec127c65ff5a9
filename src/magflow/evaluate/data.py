"""An embeddings file as the evaluation reads it: which rows are usable at which mpp (and the unit rows,
:func:`l2_normalize`, that every cosine metric compares).

A row is *usable* at mpp t when its view at t exists (``valid``); it is *labelled* when its label is
known (≥ 0). The same row is the same tissue centre at every mpp, so rows usable at several mpps
compare those mpps on the same tiles.

Label-free profiles (RankMe, the centroid matrix) take their rows from :func:`profile_rows`. mpps at
which no tile has a view are left out (and listed with the reason). The profile is then computed on
the *same tiles* at every remaining mpp, the tiles with a view at all of them, when there are at
least as many as the feature width (RankMe cannot exceed the row count). Else each mpp uses its own
tiles: for RankMe a seeded sample of equal size at every mpp (the smallest count), since RankMe grows
with N; for the centroids all of them. The record says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.embed.output import Embeddings, read_embeddings
from magflow.evaluate.record import MetricSkipped

SAME_TILES = "same tiles at every mpp"
OWN_TILES = "each mpp's own tiles"


def l2_normalize(x: ArrayLike) -> NDArray[np.float64]:
    """Rows scaled to unit L2 norm, in float64 (an all-zero row stays zero)."""
    rows = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def mpp_key(mpp: float) -> str:
    """The JSON key of an mpp: 0.25 → "0.25", 1.0 → "1" (as the embeddings file's own attributes)."""
    return f"{float(mpp):g}"


@dataclass(frozen=True)
class EvalData:
    path: Path
    emb: Embeddings

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> EvalData:
        return cls(Path(path), read_embeddings(path))

    @property
    def model(self) -> str:
        return str(self.emb.attrs.get("model", self.path.parent.name))

    @property
    def mpps(self) -> list[float]:
        return self.emb.mpps

    @property
    def n(self) -> int:
        return len(self.emb.tile_id)

    @property
    def labels(self) -> np.ndarray:
        return self.emb.label

    @property
    def slides(self) -> np.ndarray:
        return np.asarray(self.emb.slide).astype(str)

    @property
    def class_names(self) -> list[str]:
        return list(self.emb.class_names)

    def has_labels(self) -> bool:
        return bool(np.any(self.emb.label >= 0))

    def usable(self, mpp: float) -> np.ndarray:
        return np.asarray(self.emb.valid[mpp], bool)

    def labelled(self, mpp: float) -> np.ndarray:
        """Rows with a view at ``mpp`` and a known label."""
        return np.flatnonzero(self.usable(mpp) & (self.emb.label >= 0))

    def features(self, mpp: float, rows: np.ndarray | None = None) -> np.ndarray:
        x = self.emb.features[mpp]
        return x if rows is None else x[rows]

    def served_mpps(self) -> list[float]:
        """The mpps at which at least one tile has a view."""
        return [m for m in self.mpps if self.usable(m).any()]

    def common_rows(self, mpps: list[float]) -> np.ndarray:
        """Rows with a view at every one of ``mpps``."""
        if not mpps:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.logical_and.reduce([self.usable(m) for m in mpps]))

    def cell_um(self) -> float:
        """Side of an anchor cell in µm (cell px × the anchor scale's achieved mpp)."""
        anchor = float(self.emb.attrs.get("anchor_mpp", min(self.mpps)))
        achieved = self.emb.mpp_achieved.get(anchor)
        mpp = float(np.nanmedian(achieved)) if achieved is not None and np.isfinite(achieved).any() else anchor
        return float(self.emb.attrs.get("cell_px", 224)) * mpp

    def summary(self) -> dict[str, Any]:
        """What a metric record says about the embeddings it was computed from."""
        attrs = self.emb.attrs
        embed_provenance = attrs.get("provenance") or {}
        return {
            "path": str(self.path), "model": self.model, "tileset": attrs.get("tileset"), "n_tiles": self.n,
            "n_labelled": int((self.emb.label >= 0).sum()), "class_names": self.class_names,
            "mpps": self.mpps, "valid": {mpp_key(m): int(self.usable(m).sum()) for m in self.mpps},
            "anchor_mpp": attrs.get("anchor_mpp"), "source_mpp": attrs.get("source_mpp"),
            "features": attrs.get("features"), "feature_dim": attrs.get("feature_dim"),
            "precision": attrs.get("precision"), "device": attrs.get("device"), "protocol": attrs.get("protocol"),
            "resample": attrs.get("resample", "nearest_scale" if attrs.get("protocol") else None),  # v1 files: nearest
            "view_filter": attrs.get("view_filter"),
            "commit": embed_provenance.get("git") if isinstance(embed_provenance, dict) else None,
        }


def profile_rows(data: EvalData) -> tuple[dict[float, np.ndarray], str, dict[str, str]]:
    """(mpp → rows, which rule chose them, mpp → why it is left out) of a label-free profile."""
    served = data.served_mpps()
    left_out = {mpp_key(m): "no tile has a view at this mpp" for m in data.mpps if m not in served}
    if not served:
        raise MetricSkipped("no tile has a view at any mpp")
    common = data.common_rows(served)
    width = data.features(served[0]).shape[1]
    if len(common) >= width:
        return {m: common for m in served}, SAME_TILES, left_out
    return {m: np.flatnonzero(data.usable(m)) for m in served}, OWN_TILES, left_out
