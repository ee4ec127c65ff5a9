"""Seeded draws: the empirical distribution of 1e5 draws matches p (chi-square, fixed seed)."""

import numpy as np
import pytest
from scipy.stats import chisquare, kstest

from magflow.sampling import continuous_uniform, discrete_uniform, draw_mpps, max_average, min_max, single

LO, HI = 0.25, 2.0
GRID = np.linspace(LO, HI, 176)
N = 100_000


def _midpoint_histogram(draws):
    # Bins: [lo, first midpoint) holds only the lo atom, (last midpoint, hi] only the hi atom,
    # and each interior grid point owns the cell between its neighbouring midpoints.
    edges = np.concatenate([[LO], (GRID[1:] + GRID[:-1]) / 2, [HI]])
    return np.histogram(draws, bins=edges)[0]


@pytest.mark.parametrize("kernel", ["abs", "area"])
def test_minmax_draws_match_p_chi_square(kernel):
    dist, _ = min_max(GRID, kernel)
    draws = draw_mpps(dist, N, seed=12345)
    counts = _midpoint_histogram(draws)
    assert chisquare(counts, N * dist.mass).pvalue > 1e-3
    # The end masses are atoms: drawn exactly at lo and hi, never just inside.
    assert np.count_nonzero(draws == LO) == counts[0]
    assert np.count_nonzero(draws == HI) == counts[-1]
    # Power check: the same histogram is clearly not uniform.
    assert chisquare(counts, np.full(GRID.size, N / GRID.size)).pvalue < 1e-12


def test_minmax_interior_draws_are_uniform_within_their_cell():
    dist, _ = min_max(GRID, "abs")
    draws = draw_mpps(dist, N, seed=7)
    inner = draws[(draws > LO) & (draws < HI)]
    step = GRID[1] - GRID[0]
    offset = (inner - LO) / step + 0.5  # cell i spans [i - 1/2, i + 1/2) in grid units
    assert kstest(offset % 1.0, "uniform").pvalue > 1e-3


def test_cu_draws_are_continuous_uniform():
    draws = draw_mpps(continuous_uniform(GRID), N, seed=1)
    assert draws.min() >= LO and draws.max() <= HI
    assert kstest(draws, "uniform", args=(LO, HI - LO)).pvalue > 1e-3
    assert np.unique(draws).size == N  # no atoms


def test_maxavg_draws_match_p_on_equal_cells():
    dist = max_average(GRID, "area", 0.1)
    draws = draw_mpps(dist, N, seed=3)
    counts = np.histogram(draws, bins=np.linspace(LO, HI, GRID.size + 1))[0]
    assert chisquare(counts, N * dist.mass).pvalue > 1e-3


def test_du_draws_are_exactly_the_listed_mpps_in_equal_shares():
    draws = draw_mpps(discrete_uniform(), N, seed=0)
    values, counts = np.unique(draws, return_counts=True)
    assert values.tolist() == [0.25, 0.5, 1.0, 2.0]
    assert chisquare(counts).pvalue > 1e-3


def test_single_always_returns_its_mpp():
    assert set(draw_mpps(single(0.5), 1000, seed=0).tolist()) == {0.5}


def test_draws_are_reproducible_from_the_seed():
    dist, _ = min_max(GRID, "abs")
    np.testing.assert_array_equal(draw_mpps(dist, 100, seed=5), draw_mpps(dist, 100, seed=5))
    assert not np.array_equal(draw_mpps(dist, 100, seed=5), draw_mpps(dist, 100, seed=6))
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(draw_mpps(dist, 100, seed=rng), draw_mpps(dist, 100, seed=5))
