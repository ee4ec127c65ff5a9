"""Row-vector helpers shared by the metrics (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def l2_normalize(x: ArrayLike) -> NDArray[np.float64]:
    """Rows scaled to unit L2 norm, in float64 (an all-zero row stays zero)."""
    rows = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
