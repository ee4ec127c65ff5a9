"""CU-MINMAX: the distribution that maximises the worst-case expected quality, as a linear program.

The LP over the grid is  max t  s.t.  K^T p >= t·1,  sum(p) = 1,  p >= 0,  with K[i, j] = K(x_i, y_j).

Two equivalent formulations are solved with ``scipy.optimize.linprog`` (HiGHS):

- ``direct``: variables (p, t). The optimal basis is dense and the simplex needs about n pivots,
  so the time grows like n^3 (about 8 s for n = 1000 on a laptop-class CPU).
- ``inverse``: for a square invertible K (both built-in kernels are positive definite), write
  K^T p = t·1 + s with slack s >= 0 and substitute p = K^{-T}(t·1 + s). The LP in (s, t) has
  p >= 0 as its rows. When I(y) is flat at the optimum (s = 0, all p > 0) the optimal basis is
  the slack basis, so HiGHS needs about one pivot after one dense inverse.

``auto`` tries ``inverse`` and falls back to ``direct`` if K cannot be inverted or the recovered
p does not satisfy the original constraints.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog

from magflow.errors import MagflowError
from magflow.sampling.distributions import MppDistribution, with_end_atoms
from magflow.sampling.kernels import Kernel, kernel_matrix

Formulation = Literal["auto", "direct", "inverse"]


@dataclass(frozen=True)
class MinmaxSolution:
    """The LP optimum p* (one mass per support point), t* = min_j I(y_j) and solver facts."""

    mass: NDArray[np.float64]
    value: float
    status: int
    message: str
    iterations: int
    seconds: float
    method: str
    formulation: str

    def info(self) -> dict[str, Any]:
        """Solver facts for the JSON record (without the mass vector)."""
        facts = asdict(self)
        del facts["mass"]
        return facts


def _maximise_t(a_ub: NDArray[np.float64], a_eq: NDArray[np.float64], options: dict[str, Any]) -> Any:
    """linprog for max t over (z >= 0, t free) with A_ub @ (z, t) <= 0 and A_eq @ (z, t) = 1."""
    n = a_ub.shape[1] - 1
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(a_ub.shape[0]),
        A_eq=a_eq[None, :],
        b_eq=[1.0],
        bounds=[(0.0, None)] * n + [(None, None)],
        method="highs-ds",
        options=options,
    )
    if res.status != 0:
        raise MagflowError(f"cu_minmax: the linear program was not solved: {res.message}")
    return res


def _direct(kmat: NDArray[np.float64]) -> tuple[NDArray[np.float64], Any]:
    n, m = kmat.shape
    a_ub = np.hstack([-kmat.T, np.ones((m, 1))])
    a_eq = np.concatenate([np.ones(n), [0.0]])
    # Dantzig pricing: about n pivots are needed anyway, and each is cheaper than with steepest edge.
    res = _maximise_t(a_ub, a_eq, {"simplex_dual_edge_weight_strategy": "dantzig"})
    return res.x[:n], res


def _inverse(kmat: NDArray[np.float64]) -> tuple[NDArray[np.float64], Any] | None:
    inv_t = np.linalg.inv(kmat.T)  # p = inv_t @ (t·1 + s)
    ones_image = inv_t.sum(axis=1)
    a_ub = -np.hstack([inv_t, ones_image[:, None]])  # p >= 0
    a_eq = np.concatenate([inv_t.sum(axis=0), [ones_image.sum()]])  # sum(p) = 1
    # No presolve: the starting slack basis is (nearly) optimal, presolve on a dense matrix is not.
    res = _maximise_t(a_ub, a_eq, {"presolve": False})
    slack, t = res.x[:-1], res.x[-1]
    mass = inv_t @ slack + t * ones_image
    residual = np.abs(kmat.T @ mass - t - slack).max()
    if mass.min() < -1e-9 or abs(mass.sum() - 1.0) > 1e-9 or residual > 1e-9:
        return None  # K too ill-conditioned for the substitution; the caller solves it directly
    return mass, res


def solve_minmax(kmat: NDArray[np.float64], formulation: Formulation = "auto") -> MinmaxSolution:
    """argmax over probability vectors p of min_j (p @ kmat)[j], with kmat[i, j] = K(x_i, y_j)."""
    if formulation not in ("auto", "direct", "inverse"):
        raise ValueError(f"formulation must be 'auto', 'direct' or 'inverse', got {formulation!r}")
    start = time.perf_counter()
    solved = None
    if formulation != "direct" and kmat.shape[0] == kmat.shape[1]:
        try:
            solved = _inverse(kmat)
        except np.linalg.LinAlgError:
            solved = None
        used = "inverse"
    if solved is None:
        if formulation == "inverse":
            raise MagflowError("cu_minmax: the kernel matrix is not invertible; use formulation='direct'")
        solved = _direct(kmat)
        used = "direct"
    seconds = time.perf_counter() - start
    raw, res = solved
    mass = np.clip(raw, 0.0, None)
    mass /= mass.sum()
    return MinmaxSolution(
        mass=mass,
        value=float((mass @ kmat).min()),
        status=int(res.status),
        message=str(res.message),
        iterations=int(res.nit),
        seconds=seconds,
        method="highs-ds",
        formulation=used,
    )


def min_max(grid: NDArray[np.float64], kernel: Kernel | str) -> tuple[MppDistribution, MinmaxSolution]:
    """CU-MINMAX on ``grid``: the LP optimum with atoms at both ends and a density inside."""
    solution = solve_minmax(kernel_matrix(kernel, grid, grid))
    return with_end_atoms(grid, solution.mass), solution
