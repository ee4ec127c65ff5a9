"""Seeded draws of continuous mpps from an :class:`MppDistribution`."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from magflow.sampling.distributions import MppDistribution


def draw_mpps(
    dist: MppDistribution, size: int, seed: int | np.random.Generator | None = None
) -> NDArray[np.float64]:
    """Draw ``size`` mpps: pick cell i with probability mass[i], then uniform within that cell.

    Atoms (zero-width cells) come back exactly as their support point.
    """
    rng = np.random.default_rng(seed)
    cell = rng.choice(dist.support.size, size=size, p=dist.mass)
    lo, hi = dist.cell_lo[cell], dist.cell_hi[cell]
    return lo + rng.random(size) * (hi - lo)
