"""Cross-magnification consistency (Δhier, Δsem) from an embeddings file, by grid arithmetic on the anchors.

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
from typing import Any

import numpy as np

from magflow.evaluate.consistency import hierarchy_consistency, parent_rows
from magflow.evaluate.data import EvalData, mpp_key
from magflow.evaluate.outcome import MetricResult, MetricSkipped
from magflow.evaluate.settings import EvalContext

SETS = ("pos", "neg_same", "neg_diff")


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
