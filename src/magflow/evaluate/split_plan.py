"""The slide splits every label-based metric of one model uses, and why a metric cannot run.

- ``seeded``: one :func:`split_slides` per seed over the slides with labelled tiles, grouped by the
  sheet's ``group`` (a patient never spans two splits), stratified by tile label.
- ``sheet``: the sheet's own ``split`` column, as one split (recorded with seed −1).
- ``auto``: seeded when the slides allow it, else the sheet's split; the record says which and why.

The record's ``split`` block also says how many of the splits are ``distinct`` among how many slide/group
``units``: a cohort too small for one split per seed repeats splits, and its note says so (a standard
deviation over repeated splits understates the spread).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magflow.evaluate.data import EvalData
from magflow.evaluate.record import MetricSkipped
from magflow.evaluate.settings import EvalContext
from magflow.evaluate.splits import SlideSplit, choose_splits, distinct_splits, seeded_splits, split_units

SHEET_SEED = -1


@dataclass(frozen=True)
class SplitPlan:
    splits: list[SlideSplit]
    mode: str   # "seeded" or "sheet"
    note: str   # why this mode, when auto chose it; and when the cohort is too small for distinct splits
    units: int = 0  # slide/group units the slides form

    @property
    def seeds(self) -> list[int]:
        return [s.seed for s in self.splits]

    def describe(self) -> dict[str, object]:
        distinct = distinct_splits(self.splits)
        return {"mode": self.mode, "note": self.note, "seeds": self.seeds, "units": self.units,
                "distinct": distinct,  # too small: auto fell back to the sheet's split, or seeds repeat a split
                "too_small": (self.mode == "sheet" and bool(self.note)) or distinct < len(self.splits),
                "splits": [{"seed": s.seed, "train": sorted(s.train), "val": sorted(s.val), "test": sorted(s.test)}
                           for s in self.splits]}


def require_labels(data: EvalData) -> None:
    if not data.has_labels():
        raise MetricSkipped("the embeddings have no tile labels (label −1 on every tile); give the embed step "
                            "label masks or a tile-label CSV (the sheet's `annotation` column)")


def plan_splits(data: EvalData, context: EvalContext) -> SplitPlan:
    """The splits of ``context.settings.splits``, over the slides that have labelled tiles."""
    require_labels(data)
    settings = context.settings
    labelled = np.flatnonzero(data.labels >= 0)
    slides, labels = data.slides[labelled], data.labels[labelled]
    groups = np.array([_group(context.groups.get(s), s) for s in slides], dtype=object).astype(str)
    n_units = len(np.unique(split_units(slides, groups)))
    try:
        choice = choose_splits(settings.splits, lambda: seeded_splits(
            labels, slides, groups, settings.seeds, test_fraction=settings.test_fraction,
            val_fraction=settings.val_fraction))
    except ValueError as error:
        raise MetricSkipped(f"seeded slide splits are impossible: {error}") from None
    if choice.mode == "seeded":
        distinct = distinct_splits(choice.seeded)
        note = "" if distinct == len(choice.seeded) else (
            f"cohort too small: {n_units} slide/group units give only {distinct} distinct splits for "
            f"{len(choice.seeded)} seeds; repeated splits are not independent (the std understates the spread)")
        return SplitPlan(choice.seeded, "seeded", note, n_units)
    note = choice.note
    parts = {name: frozenset(s for s in np.unique(slides) if context.sheet_splits.get(s) == name)
             for name in ("train", "val", "test")}
    empty = [name for name, part in parts.items() if not part]
    if empty:
        raise MetricSkipped(f"the sheet's split has no slide with labelled tiles in {', '.join(empty)}"
                            + (f" ({note})" if note else ""))
    return SplitPlan([SlideSplit(parts["train"], parts["val"], parts["test"], SHEET_SEED)], "sheet", note, n_units)


def _group(group: object, slide: str) -> str:
    """The sheet's group, or the slide alone when it has none (prefixed: never merged with a named group)."""
    return f"group:{group}" if isinstance(group, str) and group else f"slide:{slide}"
