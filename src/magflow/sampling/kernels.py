"""Transfer kernels K(x, y): the training signal that a sample at mpp x gives at mpp y.

A kernel is a vectorised function of two broadcastable arrays of mpps, symmetric and equal to 1
on the diagonal. Add one with ``@register_kernel("name")``; it is then usable by name in the
sampler config and the sweep TSV.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magflow.errors import ConfigError

Kernel = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]

KERNELS: dict[str, Kernel] = {}


def register_kernel(name: str) -> Callable[[Kernel], Kernel]:
    """Decorator that adds a kernel to the registry under ``name``."""

    def add(kernel: Kernel) -> Kernel:
        if name in KERNELS:
            raise ValueError(f"a kernel named {name!r} is already registered")
        KERNELS[name] = kernel
        return kernel

    return add


@register_kernel("abs")
def absolute_distance(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """K_abs(x, y) = 1 / (1 + |x - y|)."""
    return 1.0 / (1.0 + np.abs(x - y))


@register_kernel("area")
def field_of_view_area(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """K_area(x, y) = (min(x, y) / max(x, y))^2, the shared field-of-view area fraction."""
    return (np.minimum(x, y) / np.maximum(x, y)) ** 2


def get_kernel(name: str) -> Kernel:
    """The registered kernel called ``name``; a ConfigError lists the known names otherwise."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ConfigError(
            f"samplers: unknown kernel {name!r}; allowed: {', '.join(sorted(KERNELS))} "
            "(register more with magflow.sampling.register_kernel)"
        ) from None


def kernel_matrix(kernel: Kernel | str, x: ArrayLike, y: ArrayLike) -> NDArray[np.float64]:
    """M[i, j] = K(x_i, y_j)."""
    k = get_kernel(kernel) if isinstance(kernel, str) else kernel
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    return np.asarray(k(xs[:, None], ys[None, :]), dtype=np.float64)
