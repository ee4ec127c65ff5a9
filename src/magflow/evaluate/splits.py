"""Seeded train/val/test splits in which no slide and no group (patient) is in two splits.

Slides that share a group, and groups that share a slide, are first merged into one unit (the
connected components of the slide–group graph), so the rule holds even for messy sheets. Units are
then split with scikit-learn's ``StratifiedGroupKFold``, which keeps each fold's class mix close to
the whole: one fold of round(1/test_fraction) is the test set, and one fold of what remains is the
validation set. The defaults give 60/20/20 by units.

The seed picks the fold. ``StratifiedGroupKFold`` only shuffles units whose class mixes are equally
spread, so on a cohort where every slide has its own label histogram its partition is the same for
every ``random_state``; taking fold 0 of it for every seed would repeat one split. Seed ``s`` therefore
holds out fold ``s mod k`` of the partition made with ``random_state = s // k`` (k folds): seeds
0…k−1 are the k folds of one partition (a k-fold cross-validation, disjoint test sets), the next k
seeds the folds of a reshuffled partition, and so on. A cohort with few units has fewer distinct
splits than seeds; :func:`distinct_splits` counts them so the record can say so.

A split is kept as sets of slide ids, so one split serves every mpp: compute it once on the tiles of
all mpps pooled, then take each mpp's rows with :meth:`SlideSplit.rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.defaults import default

SEEDS: tuple[int, ...] = tuple(default("evaluate.seeds"))  # five seeded splits → mean ± std
TEST_FRACTION = default("evaluate.test_fraction")
VAL_FRACTION = default("evaluate.val_fraction")


@dataclass(frozen=True)
class Split:
    """Row indices of one table in each split."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]


@dataclass(frozen=True)
class SlideSplit:
    """Which slides are in which split, for one seed."""

    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]
    seed: int

    def rows(self, slides: ArrayLike) -> Split:
        """The rows of a table (one slide id per row) in each split; rows of unknown slides are in none."""
        s = np.asarray(slides).astype(str)
        return Split(*(np.flatnonzero(np.isin(s, list(part))) for part in (self.train, self.val, self.test)))


def split_units(slides: ArrayLike, groups: ArrayLike | None = None) -> NDArray[np.int64]:
    """Per row, the id of its unit: the connected component of its slide in the slide–group graph."""
    slide_codes = np.unique(np.asarray(slides).astype(str), return_inverse=True)[1].ravel()
    if groups is None:
        return slide_codes.astype(np.int64)
    group_codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1].ravel()
    if len(group_codes) != len(slide_codes):
        raise ValueError("slides and groups must have one entry per row")
    n_slides, n_groups = slide_codes.max() + 1, group_codes.max() + 1
    n = n_slides + n_groups
    from scipy.sparse import coo_matrix  # here, not at the top: the workflow imports this module's defaults
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(slide_codes)), (slide_codes, n_slides + group_codes)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return component[slide_codes].astype(np.int64)


def split_slides(labels: ArrayLike, slides: ArrayLike, groups: ArrayLike | None = None, seed: int = 0,
                 test_fraction: float = TEST_FRACTION, val_fraction: float = VAL_FRACTION) -> SlideSplit:
    """A seeded, label-stratified split of the slides into train/val/test, disjoint by slide and group.

    ``labels``, ``slides`` and ``groups`` have one entry per tile (pool the tiles of every mpp).
    """
    y = np.asarray(labels)
    s = np.asarray(slides).astype(str)
    if len(y) != len(s):
        raise ValueError("labels and slides must have one entry per row")
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError("need 0 < test_fraction, val_fraction and test_fraction + val_fraction < 1")
    units = split_units(s, groups)
    n_units = len(np.unique(units))
    test_folds = round(1 / test_fraction)
    val_folds = round((1 - test_fraction) / val_fraction)
    if n_units < max(test_folds, val_folds + 1):
        raise ValueError(f"{n_units} slide/group units cannot be split {1 - test_fraction - val_fraction:.0%}/"
                         f"{val_fraction:.0%}/{test_fraction:.0%}; need at least "
                         f"{max(test_folds, val_folds + 1)} (add slides or change the fractions)")
    rest, test = _seeded_fold(y, units, np.arange(len(y)), test_folds, seed)
    train, val = _seeded_fold(y, units, rest, val_folds, seed)
    return SlideSplit(frozenset(s[train]), frozenset(s[val]), frozenset(s[test]), seed)


def seeded_splits(labels: ArrayLike, slides: ArrayLike, groups: ArrayLike | None = None,
                  seeds: Sequence[int] = SEEDS, **fractions: float) -> list[SlideSplit]:
    """One :func:`split_slides` per seed."""
    return [split_slides(labels, slides, groups, seed, **fractions) for seed in seeds]


SPLIT_MODES = ("auto", "seeded", "sheet")  # evaluate.splits


@dataclass(frozen=True)
class SplitChoice:
    """What ``evaluate.splits`` gives one set of slides: seeded splits, or the sheet's split column."""

    mode: str                   # "seeded" or "sheet"
    seeded: list[SlideSplit]    # the seeded splits; empty for the sheet's
    note: str = ""              # why `auto` fell back to the sheet's split


def choose_splits(setting: str, seeded: Callable[[], list[SlideSplit]]) -> SplitChoice:
    """``evaluate.splits``, one meaning for every evaluation: ``sheet`` the sheet's split column; ``seeded`` the
    splits ``seeded()`` makes (its ValueError, when the slides cannot be split, is raised); ``auto`` the seeded
    splits when the slides allow them, else the sheet's split column, with the reason."""
    if setting not in SPLIT_MODES:
        raise ValueError(f"evaluate.splits: {setting!r} must be one of {', '.join(SPLIT_MODES)}")
    if setting == "sheet":
        return SplitChoice("sheet", [])
    try:
        return SplitChoice("seeded", seeded())
    except ValueError as error:
        if setting == "seeded":
            raise
        return SplitChoice("sheet", [], f"seeded splits impossible ({error}); the sheet's split column is used")


def distinct_splits(splits: Sequence[SlideSplit]) -> int:
    """How many of ``splits`` differ in their train/val/test slides."""
    return len({(s.train, s.val, s.test) for s in splits})


def _seeded_fold(y: np.ndarray, units: np.ndarray, rows: np.ndarray, n_splits: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows): fold ``seed mod n_splits`` of a StratifiedGroupKFold over ``rows``."""
    from sklearn.model_selection import StratifiedGroupKFold

    repeat, fold = divmod(seed, n_splits)
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=repeat % 2**32)
    held_out = [(kept, held) for kept, held in folds.split(rows, y[rows], units[rows]) if len(held)]
    kept, held = held_out[fold % len(held_out)]
    return rows[kept], rows[held]
