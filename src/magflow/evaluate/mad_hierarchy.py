"""Δhier and Δsem as the MAD paper defines them (Table 4), on the ``mad`` tile set's own grids.

For each pair of adjacent scales (coarse → fine: 4.0 → 1.0 and 1.0 → 0.25 mpp, 2.5×→10× and 10×→40×;
factor f = coarse / fine = 4), over the TEST-split slides (:class:`~magflow.evaluate.mad_tiles.MadTiles`):

- parents: the coarse tiles of the test slides that have all f² aligned fine children kept, the fine
  cells (i·f + a, j·f + b) of their cell (i, j) on the same slide (index arithmetic on the nested grids,
  ``magflow.preprocess.hierarchy``). A parent with a child missing (background, a slide without the fine
  scale, a capped tile set) is dropped, as the paper uses complete hierarchies; ``incomplete`` counts them.
  ``min_children`` (``evaluate.mad.min_children``; default f², the paper's) lowers that bar: a parent
  with at least that many of its f² children kept is scored over the children it has (a small cohort
  whose coarse tiles all touch glass, such as the demo's); every record states the bar it used.
- a parent's class is its own tile label (the majority pixel class under its square); an unlabelled
  parent (−1) has no class to draw negatives of and is dropped (``unlabelled``).
- negatives: fine tiles of the test slides that are NOT aligned with the parent (not one of its f²
  children), drawn across ALL test slides, not within the parent's slide: ``negatives_per_parent`` of the
  labelled fine tiles with the parent's class (same) and as many with another class (diff), uniformly
  without replacement (all of them when fewer exist; ``short_same`` / ``short_diff`` count those parents).
  A parent with no candidate of one kind is dropped (``no_same_class_negative`` / ``no_other_class_negative``),
  so every score below is over the same parents. Draws use ``numpy.random.default_rng([seed, 0])``, one
  fresh generator per scale pair, so a pair's draws do not depend on which pairs ran before.
- per parent: s_pos = mean cosine(parent, child) over its (f², or at least ``min_children``) children; s_neg_same, s_neg_diff = mean
  cosine(parent, negative) over its drawn negatives; cosine of L2-normalised features.
- S_pos, S_neg^same, S_neg^diff: the means over parents (every parent weighs the same, as each has f²
  children and, normally, the same number of negatives); Δhier = S_pos − S_neg^same (does a tile know its
  own parent beyond its class?), Δsem = S_neg^same − S_neg^diff (does the class show across scales?).
- 95% interval: percentile bootstrap over parents (resampled with replacement, ``bootstrap`` times,
  ``numpy.random.default_rng([seed, 1])``), of each S and Δ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from magflow.aggregate.methods import magnification
from magflow.defaults import default
from magflow.errors import ConfigError
from magflow.evaluate.data import l2_normalize
from magflow.evaluate.mad_tiles import MadScale, MadTiles

NEGATIVES_PER_PARENT = default("evaluate.mad.negatives_per_parent")
BOOTSTRAP = default("evaluate.mad.bootstrap")
CI_LEVEL = 0.95
SCORES = ("s_pos", "s_neg_same", "s_neg_diff", "delta_hier", "delta_sem")
CHUNK = 4096  # parents whose children and negatives are gathered at once


@dataclass(frozen=True)
class ParentSets:
    """The scored parents of one scale pair and the fine rows each is compared with."""

    parents: np.ndarray    # (P,) coarse rows
    children: list[np.ndarray]  # per parent: the fine rows of its kept aligned children, k order
    same: list[np.ndarray]  # per parent: fine rows of its same-class negatives
    diff: list[np.ndarray]  # per parent: fine rows of its other-class negatives
    counts: dict[str, int]


class _Keys:
    """(slide, col, row) → a row of one scale, through sorted int64 keys."""

    def __init__(self, slides: np.ndarray, grid: np.ndarray, names: np.ndarray, side: int) -> None:
        self.names, self.side = names, side
        keys = self.encode(slides, grid)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def encode(self, slides: np.ndarray, grid: np.ndarray) -> np.ndarray:
        code = np.searchsorted(self.names, slides).astype(np.int64)
        grid = np.asarray(grid, np.int64).reshape(-1, 2)
        return (code * self.side + grid[:, 1]) * self.side + grid[:, 0]

    def find(self, slides: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Row of each (slide, col, row), −1 where the scale has no tile there."""
        keys = self.encode(slides, grid)
        if not len(self.sorted):
            return np.full(len(keys), -1, np.int64)
        at = np.minimum(np.searchsorted(self.sorted, keys), len(self.sorted) - 1)
        return np.where(self.sorted[at] == keys, self.order[at], -1).astype(np.int64)


def aligned_children(coarse: MadScale, fine: MadScale, parents: np.ndarray, factor: int) -> np.ndarray:
    """(P, f²) fine rows of each parent's aligned children (k = b·f + a), −1 where a child is missing."""
    names = np.unique(np.concatenate([coarse.slides, fine.slides]))
    side = int(max(fine.grid.max(initial=0), (coarse.grid.max(initial=0) + 1) * factor)) + 1
    keys = _Keys(fine.slides, fine.grid, names, side)
    k = np.arange(factor * factor)
    offsets = np.stack([k % factor, k // factor], axis=1)
    cells = coarse.grid[parents][:, None, :] * factor + offsets[None]
    found = keys.find(np.repeat(coarse.slides[parents], len(k)), cells.reshape(-1, 2))
    return found.reshape(len(parents), len(k))


def _draw(rng: np.random.Generator, pool: np.ndarray, exclude: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` rows of ``pool`` (sorted) minus ``exclude``, uniformly without replacement, in draw order.

    A uniform random order of the pool with the excluded rows struck out is a uniform random order of what
    remains: draw n + (excluded rows in the pool) rows, strike the excluded, keep the first n.
    """
    at = np.minimum(np.searchsorted(pool, exclude), max(len(pool) - 1, 0))
    excluded = exclude[pool[at] == exclude] if len(pool) else exclude[:0]
    take = min(len(pool), n + len(excluded))
    drawn = pool[rng.choice(len(pool), size=take, replace=False)] if take else pool[:0]
    return drawn[~np.isin(drawn, excluded)][:n]


def parent_sets(tiles: MadTiles, coarse_mpp: float, fine_mpp: float, *, negatives: int = NEGATIVES_PER_PARENT,
                seed: int = 0, min_children: int | None = None) -> ParentSets:
    """The scored parents of the pair (complete, or with at least ``min_children`` children; labelled; on
    test slides), their children and drawn negatives."""
    if negatives < 1:
        raise ValueError(f"negatives_per_parent must be >= 1, got {negatives}")
    factor = tiles.factor(coarse_mpp, fine_mpp)
    need = factor * factor if min_children is None else int(min_children)
    if not 1 <= need <= factor * factor:
        raise ConfigError(f"evaluate.mad.min_children must be in [1, {factor * factor}] for a factor-{factor} pair, "
                         f"got {min_children}")
    coarse, fine = tiles.scale(coarse_mpp), tiles.scale(fine_mpp)
    test = tiles.slides_in("test")
    on_test = coarse.rows(test)
    children = aligned_children(coarse, fine, on_test, factor)
    complete = (children >= 0).sum(axis=1) >= need
    labelled = coarse.labels[on_test] >= 0
    counts = {"test_slides": len(test), "parents_on_test_slides": int(len(on_test)),
              "incomplete": int((~complete).sum()), "unlabelled": int((complete & ~labelled).sum()),
              "no_same_class_negative": 0, "no_other_class_negative": 0, "short_same": 0, "short_diff": 0}
    pool = fine.rows(test, labelled=True)  # sorted rows: every candidate negative, all test slides
    classes = np.unique(fine.labels[pool])
    same_pools = {int(c): pool[fine.labels[pool] == c] for c in classes}
    diff_pools = {int(c): pool[fine.labels[pool] != c] for c in np.unique(coarse.labels[on_test])}
    rng = np.random.default_rng([int(seed), 0])
    kept, same, diff = [], [], []
    for p, aligned in zip(on_test[complete & labelled], children[complete & labelled]):
        c = int(coarse.labels[p])
        s = _draw(rng, same_pools.get(c, pool[:0]), aligned, negatives)
        d = _draw(rng, diff_pools[c], aligned, negatives)
        if not len(s) or not len(d):
            counts["no_same_class_negative" if not len(s) else "no_other_class_negative"] += 1
            continue
        counts["short_same"] += int(len(s) < negatives)
        counts["short_diff"] += int(len(d) < negatives)
        kept.append((p, aligned[aligned >= 0]))
        same.append(s)
        diff.append(d)
    counts["scored"] = len(kept)
    parents = np.asarray([p for p, _ in kept], np.int64)
    return ParentSets(parents, [k for _, k in kept], same, diff, counts)


def _mean_cosines(parents: np.ndarray, others: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Per parent i: the mean cosine of unit vector parents[i] with the unit vectors others[groups[i]]."""
    out = np.zeros(len(groups))
    for start in range(0, len(groups), CHUNK):
        part = groups[start:start + CHUNK]
        sizes = np.asarray([len(g) for g in part])
        rows = np.concatenate(part) if part else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(part)), sizes)
        dots = np.einsum("ij,ij->i", parents[start + owner], others[rows])
        out[start:start + len(part)] = np.bincount(owner, weights=dots, minlength=len(part)) / sizes
    return out


def per_parent_scores(tiles: MadTiles, coarse_mpp: float, fine_mpp: float, sets: ParentSets) -> dict[str, np.ndarray]:
    """s_pos, s_neg_same, s_neg_diff, delta_hier and delta_sem of each scored parent."""
    p = l2_normalize(tiles.scale(coarse_mpp).features[sets.parents])
    rows = np.unique(np.concatenate([*sets.children, *sets.same, *sets.diff]).astype(np.int64))
    unit = l2_normalize(tiles.scale(fine_mpp).features[rows])  # only the fine rows compared, in ``rows`` order

    def at(groups: list[np.ndarray]) -> list[np.ndarray]:
        return [np.searchsorted(rows, g) for g in groups]

    pos = _mean_cosines(p, unit, at(sets.children))
    same = _mean_cosines(p, unit, at(sets.same))
    diff = _mean_cosines(p, unit, at(sets.diff))
    return {"s_pos": pos, "s_neg_same": same, "s_neg_diff": diff, "delta_hier": pos - same, "delta_sem": same - diff}


def bootstrap_interval(values: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0,
                       level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    values = np.asarray(values, np.float64)
    if not len(values) or resamples < 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng([int(seed), 1])
    means = np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)])
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def pair_name(coarse_mpp: float, fine_mpp: float) -> str:
    """``2.5x>10x``: the record key of a scale pair."""
    return f"{magnification(coarse_mpp)}>{magnification(fine_mpp)}".replace("×", "x")


def hierarchy_pair(tiles: MadTiles, coarse_mpp: float, fine_mpp: float, *, negatives: int = NEGATIVES_PER_PARENT,
                   bootstrap: int = BOOTSTRAP, seed: int = 0, min_children: int | None = None) -> dict[str, Any]:
    """The record of one scale pair: each S and Δ with its bootstrap interval, and every count."""
    sets = parent_sets(tiles, coarse_mpp, fine_mpp, negatives=negatives, seed=seed, min_children=min_children)
    factor = tiles.factor(coarse_mpp, fine_mpp)
    out: dict[str, Any] = {
        "coarse_mpp": float(coarse_mpp), "fine_mpp": float(fine_mpp),
        "pair": f"{magnification(coarse_mpp)}→{magnification(fine_mpp)}", "factor": factor,
        "min_children": factor * factor if min_children is None else int(min_children),
        "negatives_per_parent": int(negatives), "bootstrap": int(bootstrap), "seed": int(seed),
        "ci_level": CI_LEVEL, "counts": dict(sets.counts)}
    if not len(sets.parents):
        return {**out, "status": "skipped", "reason": _no_parent_reason(sets.counts)}
    scores = per_parent_scores(tiles, coarse_mpp, fine_mpp, sets)
    fine_slides = tiles.scale(fine_mpp).slides
    parent_slides = tiles.scale(coarse_mpp).slides[sets.parents]
    drawn = [*sets.same, *sets.diff]
    elsewhere = sum(int((fine_slides[rows] != slide).sum()) for rows, slide in zip(drawn, [*parent_slides] * 2))
    out["counts"].update({"pairs_pos": int(sum(map(len, sets.children))), "pairs_neg_same": int(sum(map(len, sets.same))),
                          "pairs_neg_diff": int(sum(map(len, sets.diff))), "negatives_from_other_slides": elsewhere})
    for key in SCORES:
        lo, hi = bootstrap_interval(scores[key], bootstrap, seed)
        out[key] = {"mean": float(scores[key].mean()), "ci95": [lo, hi]}
    return {**out, "status": "ok", "reason": ""}


def _no_parent_reason(counts: dict[str, int]) -> str:
    return (f"no parent to score among {counts['parents_on_test_slides']} coarse tiles of the {counts['test_slides']} "
            f"test slide(s): {counts['incomplete']} have too few aligned children kept (evaluate.mad.min_children), {counts['unlabelled']} are unlabelled, "
            f"{counts['no_same_class_negative']} have no same-class and {counts['no_other_class_negative']} no "
            "other-class fine tile to draw as a negative")


def adjacent_pairs(tiles: MadTiles) -> list[tuple[float, float]]:
    """(coarse, fine) of each pair of adjacent scales, coarsest first: (4.0, 1.0), (1.0, 0.25)."""
    mpps = tiles.mpps
    return list(zip(mpps[:-1], mpps[1:]))


def mad_hierarchy(tiles: MadTiles, *, negatives: int = NEGATIVES_PER_PARENT, bootstrap: int = BOOTSTRAP,
                  seed: int = 0, min_children: int | None = None) -> dict[str, Any]:
    """Table 4 of the MAD paper: Δhier / Δsem for every pair of adjacent scales of ``tiles``."""
    pairs = {pair_name(c, f): hierarchy_pair(tiles, c, f, negatives=negatives, bootstrap=bootstrap, seed=seed,
                                             min_children=min_children)
             for c, f in adjacent_pairs(tiles)}
    return {"table": "MAD Table 4", "pairs": pairs, "test_slides": tiles.slides_in("test"),
            "parent_class": "the parent tile's own label: the majority pixel class under its square",
            "complete_parents_only": min_children is None,
            "min_children": "all f² (the paper's complete hierarchies)" if min_children is None else int(min_children),
            "negatives_across": "all test slides",
            "features": "L2-normalised; cosine similarity"}
