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

The ``consistency`` record (:func:`consistency`) rebuilds the pairs from an embeddings file, by grid
arithmetic on the anchors.

The file's rows are anchor tiles (cells of the finest scale), each embedded at every mpp centred on
itself, so it holds no tile of the coarse grid as such. The pairs are rebuilt from the anchor grid:

- parent cells: the coarse grid's cells, anchor (col, row) // f with f = coarse mpp / anchor mpp
  (``parent_rows``); a parent exists where one of its anchors has a view at the coarse mpp;
- parent embedding: the coarse view of the anchor whose centre is nearest the parent cell's centre
  (ties: the first row). That view covers the parent cell shifted by ``offset_um`` (recorded; at
  least half an anchor cell diagonally, since a coarse cell's centre is a corner of the anchor grid);
- children: the anchors inside the parent cell with a view at the fine mpp (at the anchor mpp,
  exactly the anchor cells), the representative included, whose centre also lies inside the
  representative's coarse view (f/2 anchor cells from its centre along each axis), so every child is
  in the view that stands for its parent. With every anchor kept, the representative is one of the
  four central anchors and all f² children qualify; with sparse anchors the others are counted in
  ``children_outside_view`` and left out;
- parent label: the majority label of its labelled children (ties: the smaller class); parents
  without one are dropped. Without any label, all parents form one class and Δsem is undefined.

Δhier and Δsem are computed per slide (negatives within a slide) and pooled over slides by pair
counts, which is the mean over all pairs of every slide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.defaults import default
from magflow.evaluate.data import EvalData, l2_normalize, mpp_key
from magflow.evaluate.record import MetricResult, MetricSkipped

if TYPE_CHECKING:
    from magflow.evaluate.settings import EvalContext

COARSE_MPP = default("evaluate.hierarchy.coarse_mpp")
FINE_MPP = default("evaluate.hierarchy.fine_mpp")
SETS = ("pos", "neg_same", "neg_diff")


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


@dataclass(frozen=True)
class HierarchyPairs:
    coarse_mpp: float
    fine_mpp: float
    factor: int
    parents: np.ndarray        # embeddings row whose coarse view stands for each parent
    parent_slides: np.ndarray
    parent_labels: np.ndarray  # −1 where no child is labelled
    offset_um: np.ndarray      # representative centre − parent cell centre, per parent
    children: np.ndarray       # embeddings rows of the children
    child_parent: np.ndarray   # index into ``parents`` per child
    outside_view: int          # anchors of a parent cell left out: beyond the representative's view


def hierarchy_pairs(data: EvalData, coarse_mpp: float, fine_mpp: float) -> HierarchyPairs:
    """The parents and children of an embeddings file's anchors (see the module docstring)."""
    anchor = float(data.emb.attrs.get("anchor_mpp", min(data.mpps)))
    factor = int(round(coarse_mpp / anchor))
    if abs(factor * anchor - coarse_mpp) > 1e-6 * coarse_mpp or factor < 2:
        raise MetricSkipped(f"the coarse mpp {coarse_mpp:g} is not a whole multiple (≥ 2) of the anchor mpp {anchor:g}")
    for m in (coarse_mpp, fine_mpp):
        if m not in data.mpps:
            raise MetricSkipped(f"the embeddings have no {m:g} mpp views (mpps: {data.mpps})")
    grid, cell_um = data.emb.grid, data.cell_um()
    parents, labels, offsets, slides_out, children, owners = [], [], [], [], [], []
    outside = 0
    for slide in np.unique(data.slides):
        rows = np.flatnonzero(data.slides == slide)
        coarse = rows[data.usable(coarse_mpp)[rows]]
        if not len(coarse):
            continue
        offset = np.linalg.norm(grid[coarse] + 0.5 - (grid[coarse] // factor + 0.5) * factor, axis=1) * cell_um
        cells = grid[coarse] // factor
        order = np.lexsort((coarse, offset, cells[:, 1], cells[:, 0]))
        first = np.unique(cells[order], axis=0, return_index=True)[1]
        reps = coarse[order][first]
        fine = rows[data.usable(fine_mpp)[rows]]
        owner = parent_rows(grid[reps] // factor, grid[fine], factor)
        fine, owner = fine[owner >= 0], owner[owner >= 0]
        seen = np.all(np.abs(grid[fine] - grid[reps][owner]) <= factor / 2, axis=1)
        outside += int((~seen).sum())
        fine, owner = fine[seen], owner[seen]
        base = sum(len(p) for p in parents)
        parents.append(reps)
        offsets.append(offset[order][first])
        slides_out.append(np.full(len(reps), slide, dtype=object))
        labels.append(np.array([_majority(data.labels[fine[owner == p]]) for p in range(len(reps))], np.int64))
        children.append(fine)
        owners.append(owner + base)
    if not parents or not sum(len(c) for c in children):
        raise MetricSkipped(f"no anchor has both a {coarse_mpp:g} mpp parent view and {fine_mpp:g} mpp child views")
    cat = np.concatenate
    return HierarchyPairs(coarse_mpp, fine_mpp, factor, cat(parents), cat(slides_out).astype(str), cat(labels),
                          cat(offsets), cat(children), cat(owners), outside)


def _majority(labels: np.ndarray) -> int:
    known = labels[labels >= 0]
    return int(np.argmax(np.bincount(known))) if len(known) else -1


def consistency(data: EvalData, context: EvalContext) -> MetricResult:
    """The ``consistency`` record: Δhier and Δsem per slide and pooled, between ``evaluate.hierarchy``'s mpps."""
    settings = context.settings
    pairs = hierarchy_pairs(data, settings.coarse_mpp, settings.fine_mpp)
    labelled = data.has_labels()
    keep = pairs.parent_labels >= 0 if labelled else np.ones(len(pairs.parents), bool)
    if not keep.any():
        raise MetricSkipped("no parent has a labelled child")
    labels = pairs.parent_labels if labelled else np.zeros(len(pairs.parents), np.int64)
    per_slide = {}
    for slide in np.unique(pairs.parent_slides[keep]):
        mine = np.flatnonzero(keep & (pairs.parent_slides == slide))
        local = np.full(len(pairs.parents), -1, np.int64)
        local[mine] = np.arange(len(mine))
        kids = local[pairs.child_parent] >= 0
        scores = hierarchy_consistency(data.features(settings.coarse_mpp, pairs.parents[mine]),
                                       data.features(settings.fine_mpp, pairs.children[kids]),
                                       local[pairs.child_parent[kids]], labels[mine])
        per_slide[slide] = {**scores.__dict__, "n_parents": len(mine), "n_children": int(kids.sum())}
    result = {"coarse_mpp": settings.coarse_mpp, "fine_mpp": settings.fine_mpp, "factor": pairs.factor,
              "labels": "majority of the children's labels" if labelled else "none: one class, Δsem undefined",
              "pooled": _pooled(per_slide), "per_slide": per_slide,
              "n_parents": int(keep.sum()), "n_children": int(keep[pairs.child_parent].sum()),
              "offset_um": {"max": float(pairs.offset_um[keep].max()), "mean": float(pairs.offset_um[keep].mean())},
              "children_outside_view": pairs.outside_view,
              "mpp_keys": [mpp_key(settings.coarse_mpp), mpp_key(settings.fine_mpp)]}
    constants = {"similarity": "cosine of L2-normalised embeddings", "negatives": "within a slide",
                 "pooling": "pair-count weighted mean over slides", "parent": "coarse view of the anchor nearest "
                 "the parent cell's centre"}
    return MetricResult(result, [], constants)


def _pooled(per_slide: dict[str, dict[str, Any]]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for name in SETS:
        n = np.array([s[f"n_{name}"] for s in per_slide.values()], np.float64)
        s = np.array([s[f"s_{name}"] for s in per_slide.values()], np.float64)
        out[f"n_{name}"] = int(n.sum())
        out[f"s_{name}"] = float((s[n > 0] * n[n > 0]).sum() / n.sum()) if n.sum() else float("nan")
    out["delta_hier"] = out["s_pos"] - out["s_neg_same"]
    out["delta_sem"] = out["s_neg_same"] - out["s_neg_diff"]
    return out
