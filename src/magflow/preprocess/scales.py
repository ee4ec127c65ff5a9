"""Decide, for one slide, which scales of a tile set it can serve and at what achieved mpp.

The finest servable scale is read natively when a pyramid level lies within the tolerance of it
(its achieved mpp is then the level's own, e.g. 0.499 for a 0.5 target on a 0.499 mpp scan), and every
coarser scale that is a whole multiple of it keeps that exact multiple (0.998, 1.996, ...). So grids
nest exactly, coarser scales come from the finest by exact area reduction, and each records its
achieved mpp. Scales finer than the slide allows are skipped with the reason, never faked.
"""

from __future__ import annotations

from dataclasses import dataclass

from magflow.errors import UpsamplingError
from magflow.slides.reader import Slide

WHOLE = 1e-9


@dataclass(frozen=True)
class ScalePlan:
    target_mpp: float
    achieved_mpp: float
    factor: int  # achieved_mpp / finest achieved mpp: whole for nested scales, 0 if not nested


@dataclass(frozen=True)
class SkippedScale:
    target_mpp: float
    reason: str


def whole_ratio(coarse: float, fine: float) -> int:
    """``coarse / fine`` when it is a whole number, else 0."""
    ratio = coarse / fine
    nearest = round(ratio)
    return nearest if nearest >= 1 and abs(ratio - nearest) <= WHOLE * ratio else 0


def plan_scales(slide: Slide, targets: list[float]) -> tuple[list[ScalePlan], list[SkippedScale]]:
    """Servable scales (finest first) and the skipped ones with their reasons."""
    servable, skipped = [], []
    for target in sorted(targets):
        try:
            slide.plan(target)
            servable.append(target)
        except UpsamplingError as refusal:
            skipped.append(SkippedScale(target, str(refusal)))
    if not servable:
        return [], skipped
    finest = slide.plan(servable[0]).achieved_mpp
    plans = []
    for target in servable:
        factor = whole_ratio(target, servable[0])
        achieved = finest * factor if factor else slide.plan(target).achieved_mpp
        plans.append(ScalePlan(target, achieved, factor))
    return plans, skipped
