"""Magnification Robustness Index: PathoROB's Robustness Index (RI) with mpp as the confounder.

Computed by the ``croma`` package (``croma.RI``), not here. Every embedding of a tile at an mpp is
one sample: its class is the tile label, its confounder the mpp, and its group (croma's
``group_id``, whose members are never each other's neighbours) the slide or patient, so the same
tile at another mpp never counts as a neighbour. Among each sample's k nearest cosine neighbours,
croma counts those of the same class at another mpp (biology wins) against those of another class
at the same mpp (magnification wins); RI is the pooled share of the first, in [0, 1], above 0.5 when
the class outweighs the mpp. k is chosen by croma from ``RI_K_CANDIDATES`` by kNN balanced accuracy
of the class, and the record states it, the design and croma's ``support`` (the share of samples
with any informative neighbour).

Per mpp: the mean per-sample RI of the tiles at that mpp in the pooled computation, over the tiles
with an informative neighbour (their share is the mpp's support; a tile whose neighbours are all of
its own class at its own mpp, or of another class at another mpp, has none). Per pair of
mpps (a, b): croma's RI on the samples at a and b alone, so magnification can only be the pair's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from magflow.evaluate.data import EvalData
from magflow.evaluate.record import MetricResult, MetricSkipped
from magflow.evaluate.settings import EvalContext

RI_K_CANDIDATES: tuple[int, ...] = (5, 11, 21)  # croma's quickstart candidates
RI_DESIGN = "all"  # croma's default design: every sample scored together (paired_2x2 needs 2-class subsets)
CONFOUNDER = "mpp"


@dataclass(frozen=True)
class MagnificationRobustness:
    """The Robustness Index of one model with mpp as the confounder, and how croma computed it."""

    value: float                 # pooled RI over every mpp
    k: int                       # the k croma chose
    support: float               # share of samples with an informative neighbour
    n: int                       # samples (tile × mpp)
    per_mpp: dict[float, float]  # mean per-sample RI of the tiles at each mpp (NaN: none informative)
    per_mpp_support: dict[float, float]  # share of the tiles at each mpp with an informative neighbour
    pairs: dict[tuple[float, float], float] = field(default_factory=dict)  # RI on the samples of two mpps
    k_candidates: tuple[int, ...] = RI_K_CANDIDATES
    design: str = RI_DESIGN
    croma_version: str = ""

    def settings(self) -> dict[str, Any]:
        """What a record states about how the index was computed."""
        return {"package": "croma", "version": self.croma_version, "metric": "RI", "confounder": CONFOUNDER,
                "class": "tile label", "group": "slide or patient (never a neighbour of its own samples)",
                "k_candidates": list(self.k_candidates), "k": self.k, "design": self.design,
                "per_mpp": "mean per-sample RI of the tiles at that mpp", "pairs": "RI on the samples of two mpps"}

    def as_result(self) -> dict[str, Any]:
        return {"ri": self.value, "k": self.k, "support": self.support, "n": self.n,
                "per_mpp": {f"{m:g}": v for m, v in self.per_mpp.items()},
                "per_mpp_support": {f"{m:g}": v for m, v in self.per_mpp_support.items()},
                "pairs": {f"{a:g}|{b:g}": v for (a, b), v in self.pairs.items()}, "settings": self.settings()}


def robustness_index(features: Mapping[float, ArrayLike], labels: ArrayLike, groups: ArrayLike | None = None, *,
                     present: Mapping[float, ArrayLike] | None = None,
                     k_candidates: Sequence[int] = RI_K_CANDIDATES, pairs: bool = True) -> MagnificationRobustness:
    """croma's RI of N tiles embedded at several mpps, the mpp as the confounder.

    ``features``: mpp → N×D array, row i the same tile at every mpp; ``labels``: N class labels
    (negative: unlabelled, left out); ``groups``: N slide or patient ids (default: each tile its own
    group); ``present``: mpp → N booleans, whether row i has an embedding there (default: all);
    ``pairs``: also the RI of every pair of mpps.
    """
    import croma

    y = np.asarray(labels)
    n = len(y)
    g = np.arange(n).astype(str) if groups is None else np.asarray(groups).astype(str)
    if len(g) != n:
        raise ValueError(f"groups must have one entry per label ({n}), got {len(g)}")
    mpps = sorted(float(m) for m in features)
    if len(mpps) < 2:
        raise ValueError(f"the magnification robustness index needs at least two mpps, got {mpps}")
    labelled = y >= 0 if np.issubdtype(y.dtype, np.number) else np.ones(n, bool)
    rows = {}
    for m in mpps:
        x = np.asarray(features[m])
        if x.ndim != 2 or len(x) != n:
            raise ValueError(f"features at {m:g} mpp must be an N×D array with one row per label ({n}), got {x.shape}")
        keep = labelled if present is None or m not in present else labelled & np.asarray(present[m], bool)
        rows[m] = np.flatnonzero(keep)
    x_all = np.concatenate([np.asarray(features[m], dtype=np.float64)[rows[m]] for m in mpps])
    mpp_of = np.concatenate([np.full(len(rows[m]), m) for m in mpps])
    index = np.concatenate([rows[m] for m in mpps])
    manifest = _manifest(index, mpp_of, y, g)

    pooled = _ri(croma, x_all, manifest, k_candidates)
    sample = np.asarray(pooled.sample_values_aligned, dtype=np.float64)
    defined = np.isfinite(sample)
    per_mpp = {m: float(np.mean(sample[defined & (mpp_of == m)])) if (defined & (mpp_of == m)).any()
               else float("nan") for m in mpps}
    support = {m: float(defined[mpp_of == m].mean()) if (mpp_of == m).any() else float("nan") for m in mpps}
    pair_values = {}
    if pairs:
        for i, a in enumerate(mpps):
            for b in mpps[i + 1:]:
                both = (mpp_of == a) | (mpp_of == b)
                pair_values[(a, b)] = float(_ri(croma, x_all[both], manifest[both].reset_index(drop=True),
                                                k_candidates).value)
    return MagnificationRobustness(float(pooled.value), int(pooled.k), float(pooled.support), len(x_all), per_mpp,
                                   support, pair_values, tuple(int(k) for k in k_candidates), RI_DESIGN, croma.__version__)


def _manifest(index: np.ndarray, mpp_of: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame({"sample_id": [f"{i}@{m:g}" for i, m in zip(index, mpp_of)],
                         "image_path": [f"{i}" for i in index],  # croma needs the column; it never reads images
                         "label": labels[index].astype(str), "group_id": groups[index],
                         CONFOUNDER: [f"{m:g}" for m in mpp_of]})


def _ri(croma: Any, x: np.ndarray, manifest: Any, k_candidates: Sequence[int]) -> Any:
    with warnings.catch_warnings():  # croma warns about partial support; it is recorded instead
        warnings.simplefilter("ignore", RuntimeWarning)
        return croma.RI.compute(x, manifest, confounder_column=CONFOUNDER, k_candidates=list(k_candidates),
                                evaluation_design=RI_DESIGN)


def robustness_metric(data: EvalData, context: EvalContext) -> MetricResult:
    """The index on an eval embeddings file: its labelled tiles with a view, grouped by the sheet's group
    (else by slide)."""
    served = data.served_mpps()
    if not data.has_labels() or len(served) < 2:
        raise MetricSkipped(f"the robustness index needs tile labels and views at two mpps or more "
                            f"(labels: {data.has_labels()}, mpps with views: {served})")
    groups = np.array([context.groups.get(s) or s for s in data.slides], dtype=object).astype(str)
    try:
        result = robustness_index({m: data.features(m) for m in served}, data.labels, groups,
                                  present={m: data.usable(m) for m in served})
    except (ValueError, RuntimeError) as error:  # croma raises RuntimeError when no k can be chosen
        raise MetricSkipped(f"robustness index: {error}") from None
    return MetricResult({"mpps": served, **result.as_result()}, [], result.settings())
