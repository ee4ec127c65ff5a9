"""Distributions over mpp and the strategies that produce them.

An :class:`MppDistribution` holds point masses ``mass[i]`` at ``support[i]``; they are the
quadrature used for I(y) = sum_i mass[i] K(support[i], y). For draws, each mass is spread
uniformly over its cell ``[cell_lo[i], cell_hi[i]]``; a cell of zero width is an atom, drawn
exactly. Continuous strategies live on a uniform grid over [lo, hi] (see :func:`mpp_grid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.errors import ConfigError
from magflow.sampling.kernels import Kernel, kernel_matrix

STANDARD_MPPS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True, eq=False)
class MppDistribution:
    """Point masses at ``support``, each drawn uniformly over its cell (an atom if the cell is a point)."""

    support: NDArray[np.float64]
    mass: NDArray[np.float64]
    cell_lo: NDArray[np.float64]
    cell_hi: NDArray[np.float64]

    def __post_init__(self) -> None:
        arrays = (self.support, self.mass, self.cell_lo, self.cell_hi)
        if len({a.shape for a in arrays}) != 1 or self.support.ndim != 1 or self.support.size == 0:
            raise ValueError("support, mass, cell_lo and cell_hi must be 1-d arrays of one length")
        if np.any(self.mass < 0) or not np.isclose(self.mass.sum(), 1.0, atol=1e-9):
            raise ValueError("mass must be non-negative and sum to 1")
        if np.any(self.cell_lo > self.support) or np.any(self.support > self.cell_hi):
            raise ValueError("every support point must lie in its cell")

    @property
    def atoms(self) -> NDArray[np.bool_]:
        """True where the mass is drawn exactly at its support point."""
        return self.cell_lo == self.cell_hi

    def quality(self, kernel: Kernel | str, y: ArrayLike) -> NDArray[np.float64]:
        """I(y) = sum_i mass_i K(support_i, y): the expected training signal at each mpp y."""
        return self.mass @ kernel_matrix(kernel, self.support, y)


def mpp_grid(lo: float = 0.25, hi: float = 2.0, step: float = 0.005) -> NDArray[np.float64]:
    """Uniform grid from lo to hi inclusive with spacing as close to ``step`` as divides the range."""
    if not 0 < lo < hi:
        raise ConfigError(f"samplers.range: need 0 < lo < hi, got [{lo}, {hi}]")
    if not 0 < step <= hi - lo:
        raise ConfigError(f"samplers.grid_step: need 0 < step <= hi - lo = {hi - lo:g}, got {step}")
    return np.linspace(lo, hi, round((hi - lo) / step) + 1)


def point_masses(mpps: Sequence[float], mass: ArrayLike | None = None) -> MppDistribution:
    """A purely discrete distribution: every mpp is an atom (equal masses unless given)."""
    support = np.asarray(mpps, dtype=np.float64)
    p = np.full(support.size, 1.0 / support.size) if mass is None else np.asarray(mass, float)
    return MppDistribution(support, p, support.copy(), support.copy())


def single(mpp: float) -> MppDistribution:
    """Always the same mpp."""
    return point_masses([mpp])


def discrete_uniform(mpps: Sequence[float] = STANDARD_MPPS) -> MppDistribution:
    """Uniform over a list of mpps; draws are exactly those mpps."""
    if len(mpps) == 0:
        raise ConfigError("samplers.du_mpps: the list is empty; give at least one mpp")
    if len(set(mpps)) != len(mpps):
        raise ConfigError(f"samplers.du_mpps: {list(mpps)} lists an mpp twice; list each once")
    return point_masses(sorted(mpps))


def on_equal_cells(grid: NDArray[np.float64], weights: ArrayLike) -> MppDistribution:
    """A piecewise-constant density: grid point i owns the i-th of n equal cells of [lo, hi].

    Grid point i (of n, uniform, ends included) lies inside cell i, so the point masses are a
    Riemann quadrature of the density. With equal weights the draws are exactly uniform on [lo, hi].
    """
    w = np.asarray(weights, dtype=np.float64)
    edges = np.linspace(grid[0], grid[-1], grid.size + 1)
    return MppDistribution(grid, w / w.sum(), edges[:-1], edges[1:])


def continuous_uniform(grid: NDArray[np.float64]) -> MppDistribution:
    """Continuous uniform on [grid[0], grid[-1]]; I(y) uses equal weights 1/n on the grid points.

    Equal weights are the convention of the reference values (min I = 0.5787 for abs and 0.1272
    for area on the 176-point grid); trapezoid weights would give 0.5781 and 0.1250.
    """
    return on_equal_cells(grid, np.ones(grid.size))


def max_average(grid: NDArray[np.float64], kernel: Kernel | str, lam: float = 1.0) -> MppDistribution:
    """CU-MAXAVG: p(x) proportional to exp(K̄(x) / λ), K̄(x) the grid mean of K(x, ·)."""
    if not lam > 0:
        raise ConfigError(f"samplers: lam must be > 0 for cu_maxavg, got {lam}")
    kbar = kernel_matrix(kernel, grid, grid).mean(axis=1)
    # Shift by the maximum so that small λ does not overflow.
    return on_equal_cells(grid, np.exp((kbar - kbar.max()) / lam))


def with_end_atoms(grid: NDArray[np.float64], mass: NDArray[np.float64]) -> MppDistribution:
    """Atoms at both grid ends plus an interior density: point i spreads over its midpoint cell."""
    mid = (grid[1:] + grid[:-1]) / 2
    cell_lo = np.concatenate([grid[:1], mid])
    cell_hi = np.concatenate([mid, grid[-1:]])
    cell_lo[-1] = grid[-1]
    cell_hi[0] = grid[0]
    return MppDistribution(grid, mass, cell_lo, cell_hi)
