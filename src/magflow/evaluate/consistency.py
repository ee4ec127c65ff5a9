"""Cross-magnification consistency between two nested scales (MAD): Δhier and Δsem.

A parent tile at the coarse mpp (default 1.0) and a child tile at the fine mpp (default 0.25) are
compared by the cosine similarity of their embeddings. Every (parent, child) pair falls in one set:

- S_pos: the child lies inside the parent;
- S_neg_same: the child lies inside another parent with the same label as this parent;
- S_neg_diff: the child lies inside a parent with a different label.

Each S is the mean cosine similarity over all pairs of its set (so S_pos is the mean over children of
the similarity to their own parent), computed exactly with per-parent and per-class sums of unit
vectors rather than a parents × children matrix. Then Δhier = S_pos − S_neg_same (does a child
know its own parent, beyond its class?) and Δsem = S_neg_same − S_neg_diff (does the class show
across scales?). Negatives come from every tile passed in: call once per slide to keep them within
a slide. Children whose parent is absent (row −1) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.defaults import default
from magflow.evaluate.vectors import l2_normalize

COARSE_MPP = default("evaluate.hierarchy.coarse_mpp")
FINE_MPP = default("evaluate.hierarchy.fine_mpp")


@dataclass(frozen=True)
class HierarchyConsistency:
    s_pos: float
    s_neg_same: float
    s_neg_diff: float
    delta_hier: float  # s_pos − s_neg_same
    delta_sem: float   # s_neg_same − s_neg_diff
    n_pos: int         # pairs in each set
    n_neg_same: int
    n_neg_diff: int


def parent_rows(parent_grid: ArrayLike, child_grid: ArrayLike, factor: int) -> NDArray[np.int64]:
    """Per child, the row of its parent in ``parent_grid`` (−1 if absent).

    Grids are (col, row) rows of nested grids (``TileStore`` groups' ``grid``); ``factor`` is fine
    cells per coarse cell along an axis (``TileStore.factor``), so the parent cell is child // factor.
    """
    parents = np.asarray(parent_grid, dtype=np.int64).reshape(-1, 2)
    cells = np.asarray(child_grid, dtype=np.int64).reshape(-1, 2) // factor
    table = np.full((parents[:, 1].max(initial=-1) + 1, parents[:, 0].max(initial=-1) + 1), -1, np.int64)
    table[parents[:, 1], parents[:, 0]] = np.arange(len(parents))
    inside = (cells[:, 1] < table.shape[0]) & (cells[:, 0] < table.shape[1])
    found = np.full(len(cells), -1, np.int64)
    found[inside] = table[cells[inside, 1], cells[inside, 0]]
    return found


def hierarchy_consistency(parents: ArrayLike, children: ArrayLike, child_parent: ArrayLike,
                          parent_labels: ArrayLike) -> HierarchyConsistency:
    """S_pos, S_neg_same, S_neg_diff, Δhier and Δsem of parent (Np×D) and child (Nc×D) embeddings.

    ``child_parent[j]`` is the parent row of child j (−1: none); ``parent_labels`` has one label per parent.
    """
    p, c = l2_normalize(parents), l2_normalize(children)
    owner = np.asarray(child_parent, dtype=np.int64)
    labels = np.asarray(parent_labels)
    if len(owner) != len(c) or len(labels) != len(p) or p.shape[1] != c.shape[1]:
        raise ValueError("need one parent row per child, one label per parent and equal widths")
    if np.any(owner >= len(p)):
        raise ValueError("child_parent points past the last parent")
    keep = owner >= 0
    c, owner = c[keep], owner[keep]
    class_of_parent = np.unique(labels, return_inverse=True)[1].ravel()
    n_classes = class_of_parent.max() + 1 if len(p) else 0

    own_sum = np.zeros_like(p)
    np.add.at(own_sum, owner, c)
    own_n = np.bincount(owner, minlength=len(p))
    child_class = class_of_parent[owner]
    class_sum = np.zeros((n_classes, p.shape[1]))
    np.add.at(class_sum, child_class, c)
    class_n = np.bincount(child_class, minlength=n_classes)

    same_sum = class_sum[class_of_parent] - own_sum
    same_n = class_n[class_of_parent] - own_n
    diff_sum = c.sum(axis=0) - class_sum[class_of_parent]
    diff_n = len(c) - class_n[class_of_parent]

    sets = [(own_sum, own_n), (same_sum, same_n), (diff_sum, diff_n)]
    means = [_mean_pair(p, total, n) for total, n in sets]
    counts = [int(n.sum()) for _, n in sets]
    return HierarchyConsistency(*means, means[0] - means[1], means[1] - means[2], *counts)


def _mean_pair(p: np.ndarray, sums: np.ndarray, n: np.ndarray) -> float:
    """Σ_i p_i · sums_i / Σ_i n_i: the mean cosine over all pairs of a set (NaN if it has none)."""
    total = int(n.sum())
    return float(np.einsum("id,id->", p, sums) / total) if total else float("nan")
