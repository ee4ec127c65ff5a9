"""Magnification sampling: transfer kernels, optimized mpp distributions and seeded draws.

Crop-and-resize lives in :mod:`magflow.sampling.transforms` (it needs torch and PIL); the steps are
:mod:`magflow.sampling.optimize_sampler` and :mod:`magflow.sampling.plot_samplers`.
"""

from magflow.sampling.distributions import (
    STANDARD_MPPS,
    MppDistribution,
    continuous_uniform,
    discrete_uniform,
    max_average,
    mpp_grid,
    single,
)
from magflow.sampling.draw import draw_mpps
from magflow.sampling.kernels import KERNELS, get_kernel, kernel_matrix, register_kernel
from magflow.sampling.minmax import MinmaxSolution, min_max, solve_minmax
from magflow.sampling.record import read_sampler, write_sampler
from magflow.sampling.sampler import STRATEGIES, Sampler, SamplerConfig, build_sampler

__all__ = [
    "KERNELS",
    "STANDARD_MPPS",
    "STRATEGIES",
    "MinmaxSolution",
    "MppDistribution",
    "Sampler",
    "SamplerConfig",
    "build_sampler",
    "continuous_uniform",
    "discrete_uniform",
    "draw_mpps",
    "get_kernel",
    "kernel_matrix",
    "max_average",
    "min_max",
    "mpp_grid",
    "read_sampler",
    "register_kernel",
    "single",
    "solve_minmax",
    "write_sampler",
]
