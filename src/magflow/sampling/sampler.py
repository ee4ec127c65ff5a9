"""A configured sampler: strategy + kernel + range + grid -> distribution, quality profile, solver info."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from magflow.defaults import default
from magflow.errors import ConfigError
from magflow.sampling.distributions import (
    MppDistribution,
    continuous_uniform,
    discrete_uniform,
    max_average,
    mpp_grid,
    single,
)
from magflow.sampling.kernels import get_kernel
from magflow.sampling.minmax import min_max

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerConfig:
    """One row of the sampler sweep. ``lam`` is used by cu_maxavg only, ``mpp`` by single only."""

    strategy: str
    kernel: str = "abs"
    lam: float | None = None
    mpp: float | None = None
    lo: float = default("samplers.range")[0]  # the config schema's samplers block
    hi: float = default("samplers.range")[1]
    grid_step: float = default("samplers.grid_step")
    du_mpps: tuple[float, ...] = tuple(default("samplers.du_mpps"))

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"samplers: unknown strategy {self.strategy!r}; allowed: {', '.join(STRATEGIES)}"
            )
        get_kernel(self.kernel)
        mpp_grid(self.lo, self.hi, self.grid_step)
        if self.lam is not None and self.strategy != "cu_maxavg":
            raise ConfigError(
                f"samplers: lam applies to cu_maxavg only; got lam={self.lam} for strategy "
                f"{self.strategy!r} (leave it NA)"
            )
        if self.mpp is not None and self.strategy != "single":
            raise ConfigError(
                f"samplers: mpp applies to single only; got mpp={self.mpp} for strategy "
                f"{self.strategy!r} (leave it NA)"
            )
        if self.strategy == "cu_maxavg" and self.lam is not None and not self.lam > 0:
            raise ConfigError(f"samplers: lam must be > 0 for cu_maxavg, got {self.lam}")
        if self.strategy == "single" and (self.mpp is None or not self.lo <= self.mpp <= self.hi):
            raise ConfigError(
                f"samplers: strategy 'single' needs mpp in [{self.lo}, {self.hi}], got {self.mpp}"
            )
        if self.strategy == "du":
            discrete_uniform(self.du_mpps)
            outside = [m for m in self.du_mpps if not self.lo <= m <= self.hi]
            if outside:
                raise ConfigError(
                    f"samplers.du_mpps: {outside} lie outside the range [{self.lo}, {self.hi}]"
                )

    @property
    def effective_lam(self) -> float | None:
        """The λ the strategy uses (cu_maxavg defaults to 1.0), None for the others."""
        if self.strategy != "cu_maxavg":
            return None
        return 1.0 if self.lam is None else self.lam


@dataclass(frozen=True, eq=False)
class Sampler:
    """A solved sampler: its distribution and the quality profile I(y) on the grid."""

    config: SamplerConfig
    distribution: MppDistribution
    grid: NDArray[np.float64]
    quality: NDArray[np.float64]
    solver: dict[str, Any] | None = None

    @property
    def min_quality(self) -> float:
        """min_y I(y) over the grid."""
        return float(self.quality.min())

    @property
    def mean_quality(self) -> float:
        """Mean of I(y) over the grid points."""
        return float(self.quality.mean())


Strategy = Callable[[SamplerConfig, NDArray[np.float64]], tuple[MppDistribution, dict[str, Any] | None]]


def _single(cfg: SamplerConfig, grid: NDArray[np.float64]) -> tuple[MppDistribution, None]:
    assert cfg.mpp is not None  # checked by SamplerConfig
    return single(cfg.mpp), None


def _du(cfg: SamplerConfig, grid: NDArray[np.float64]) -> tuple[MppDistribution, None]:
    return discrete_uniform(cfg.du_mpps), None


def _cu(cfg: SamplerConfig, grid: NDArray[np.float64]) -> tuple[MppDistribution, None]:
    return continuous_uniform(grid), None


def _maxavg(cfg: SamplerConfig, grid: NDArray[np.float64]) -> tuple[MppDistribution, None]:
    assert cfg.effective_lam is not None
    return max_average(grid, cfg.kernel, cfg.effective_lam), None


def _minmax(cfg: SamplerConfig, grid: NDArray[np.float64]) -> tuple[MppDistribution, dict[str, Any]]:
    dist, solution = min_max(grid, cfg.kernel)
    return dist, solution.info()


STRATEGIES: dict[str, Strategy] = {
    "single": _single,
    "du": _du,
    "cu": _cu,
    "cu_maxavg": _maxavg,
    "cu_minmax": _minmax,
}


def build_sampler(cfg: SamplerConfig) -> Sampler:
    """Build the distribution of ``cfg`` and evaluate I(y) on the grid."""
    grid = mpp_grid(cfg.lo, cfg.hi, cfg.grid_step)
    dist, solver = STRATEGIES[cfg.strategy](cfg, grid)
    quality = dist.quality(cfg.kernel, grid)
    log.info(
        "%s/%s on %d grid points: min I = %.4f, mean I = %.4f%s",
        cfg.strategy,
        cfg.kernel,
        grid.size,
        quality.min(),
        quality.mean(),
        f", LP {solver['message']} in {solver['seconds']:.2f} s" if solver else "",
    )
    return Sampler(cfg, dist, grid, quality, solver)
