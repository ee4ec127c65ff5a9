"""Slides as bags of mixed-scale regions, with their labels and groups, for slide-level evaluation.

Every row of the AB-MIL table reads the same data: a slide is R regions of N tokens (frozen tile
embeddings of several scales, their scale id, position and valid mask, as the mixing encoder takes
them). The mixer rows contextualize the regions first; the tile baselines pool the tokens directly.
Labels belong to groups (patients): every slide of a group carries its group's label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from magflow.aggregate.regions import RegionTokens, SlideRegions
from magflow.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionBag:
    """One slide: ``tokens`` R×N×D float, ``scale_id`` R×N long, ``position`` R×N×2 long, ``valid`` R×N bool."""

    tokens: Tensor
    scale_id: Tensor
    position: Tensor
    valid: Tensor

    def __post_init__(self) -> None:
        r, n = self.tokens.shape[:2]
        if (self.tokens.ndim != 3 or self.scale_id.shape != (r, n) or self.position.shape != (r, n, 2)
                or self.valid.shape != (r, n)):
            raise ValueError(f"a region bag needs tokens R×N×D, scale_id R×N, position R×N×2 and valid R×N; got "
                             f"{tuple(self.tokens.shape)}, {tuple(self.scale_id.shape)}, "
                             f"{tuple(self.position.shape)}, {tuple(self.valid.shape)}")

    def to(self, device: torch.device | str) -> RegionBag:
        return RegionBag(*(t.to(device) for t in (self.tokens, self.scale_id, self.position, self.valid)))

    @classmethod
    def from_regions(cls, regions: RegionTokens) -> RegionBag:
        """Region sequences (one layout shared by every region) as a bag; the layout is broadcast, not copied."""
        r = len(regions.tokens)
        return cls(torch.from_numpy(np.ascontiguousarray(regions.tokens, np.float32)),
                   torch.from_numpy(np.asarray(regions.scale_id, np.int64)).expand(r, -1),
                   torch.from_numpy(np.asarray(regions.position, np.int64)).expand(r, -1, -1),
                   torch.from_numpy(np.asarray(regions.valid, bool)))


@dataclass(frozen=True)
class SlideSet:
    """Slides with one bag, one integer label and one group each (group None: the slide is its own group)."""

    ids: tuple[str, ...]
    bags: tuple[RegionBag, ...]
    labels: NDArray[np.int64]
    groups: tuple[str, ...]

    @classmethod
    def build(cls, ids: Sequence[str], bags: Sequence[RegionBag], labels: Sequence[int],
              groups: Sequence[str | None] | None = None) -> SlideSet:
        """Check that slides are unique and that the slides of one group share its label."""
        ids = tuple(str(i) for i in ids)
        if not (len(ids) == len(bags) == len(labels)) or (groups is not None and len(groups) != len(ids)):
            raise ValueError("ids, bags, labels and groups need one entry per slide")
        if len(set(ids)) != len(ids):
            raise ConfigError("slide ids must be unique in the slide sheet")
        given = groups if groups is not None else [None] * len(ids)
        groups = tuple(str(g) if g not in (None, "") else f"slide:{s}" for s, g in zip(ids, given))
        labels_of: dict[str, set[int]] = {}
        for group, label in zip(groups, labels):
            labels_of.setdefault(group, set()).add(int(label))
        mixed = {g: sorted(v) for g, v in labels_of.items() if len(v) > 1}
        if mixed:
            raise ConfigError(f"slide sheet: the slides of group(s) {mixed} have different labels; a label belongs "
                              "to the group (patient) and is propagated to its slides, so give each group one label")
        return cls(ids, tuple(bags), np.asarray(labels, dtype=np.int64), groups)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Iterable[str]) -> SlideSet:
        """The slides among ``ids``, in this set's order."""
        keep = set(ids)
        rows = [i for i, s in enumerate(self.ids) if s in keep]
        return SlideSet(tuple(self.ids[i] for i in rows), tuple(self.bags[i] for i in rows), self.labels[rows],
                        tuple(self.groups[i] for i in rows))

    def group_rows(self) -> list[list[int]]:
        """Rows of each group, groups in order of first appearance."""
        rows: dict[str, list[int]] = {}
        for i, g in enumerate(self.groups):
            rows.setdefault(g, []).append(i)
        return list(rows.values())


def load_slides(paths: Sequence[str | os.PathLike[str]], labels: Mapping[str, int],
                groups: Mapping[str, str | None] | None = None) -> tuple[SlideSet, dict[str, str]]:
    """The slides of region files (:mod:`magflow.aggregate.regions`), each a bag of all its listed regions.

    ``labels`` maps slide id (the file's ``slide_id``) to class; every file's slide needs one. A slide
    without a region (no tissue at the coarsest scale) is left out, and returned with the reason.
    """
    ids, bags, left_out = [], [], {}
    for path in paths:
        regions = SlideRegions(path)
        if regions.slide_id not in labels:
            raise ConfigError(f"{path}: slide {regions.slide_id!r} has no label for this task; give it one in the "
                              "slide sheet or leave its region file out of the task")
        if len(regions) == 0:
            left_out[regions.slide_id] = "no region: no tissue at the coarsest scale"
            log.warning("abmil: slide %s left out: %s", regions.slide_id, left_out[regions.slide_id])
            continue
        ids.append(regions.slide_id)
        bags.append(RegionBag.from_regions(regions.sequences()))
    groups = groups or {}
    return SlideSet.build(ids, bags, [labels[i] for i in ids], [groups.get(i) for i in ids]), left_out
