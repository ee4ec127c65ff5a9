"""Strategies and the cu_minmax LP against known answers and independent computations."""

import numpy as np
import pytest
from scipy.optimize import brentq

from magflow.errors import ConfigError, MagflowError
from magflow.sampling import (
    SamplerConfig,
    build_sampler,
    continuous_uniform,
    discrete_uniform,
    kernel_matrix,
    max_average,
    min_max,
    mpp_grid,
    single,
    solve_minmax,
)

LO, HI = 0.25, 2.0
GRID176 = np.linspace(LO, HI, 176)  # the reference grid, step 0.01

# Reference values on the 176-point grid (discrete LP, p a probability vector on the grid).
REFERENCE = {
    "abs": {"t_star": 0.6278, "atom_lo": 0.232, "uniform_min": 0.5787},
    "area": {"t_star": 0.3248, "atom_lo": 0.169, "uniform_min": 0.1272},
}


@pytest.fixture(scope="module", params=["abs", "area"])
def minmax176(request):
    dist, solution = min_max(GRID176, request.param)
    return request.param, dist, solution


def test_mpp_grid_matches_the_reference_grid():
    np.testing.assert_allclose(mpp_grid(LO, HI, 0.01), GRID176)
    assert mpp_grid().size == 351  # default: one point per 0.005 mpp


def test_minmax_reproduces_reference_values(minmax176):
    kernel, dist, solution = minmax176
    ref = REFERENCE[kernel]
    assert solution.status == 0
    assert solution.value == pytest.approx(ref["t_star"], abs=5e-5)
    assert dist.mass[0] == pytest.approx(ref["atom_lo"], abs=5e-4)
    assert dist.support[0] == LO and dist.support[-1] == HI


@pytest.mark.parametrize("kernel", ["abs", "area"])
def test_uniform_min_quality_reference(kernel):
    quality = continuous_uniform(GRID176).quality(kernel, GRID176)
    assert quality.min() == pytest.approx(REFERENCE[kernel]["uniform_min"], abs=5e-5)


def test_minmax_quality_is_flat_and_equals_t_star(minmax176):
    kernel, dist, solution = minmax176
    quality = dist.quality(kernel, GRID176)
    assert np.ptp(quality) < 1e-7
    assert quality.min() == pytest.approx(solution.value, abs=1e-9)


def test_minmax_has_atoms_at_both_ends_and_a_density_inside(minmax176):
    _, dist, _ = minmax176
    assert dist.atoms.tolist() == [True] + [False] * 174 + [True]
    interior = dist.mass[1:-1]
    # An atom, not the end of a density: each end holds >10x its neighbour's mass.
    assert dist.mass[0] > 10 * dist.mass[1] and dist.mass[-1] > 10 * dist.mass[-2]
    assert np.all(interior > 0)
    assert dist.mass.sum() == pytest.approx(1.0)


def test_minmax_is_certified_optimal_by_weak_duality(minmax176):
    # K is symmetric, so for any p: min_y I_p(y) <= p^T K p* <= max_x (K p*)_x. A flat K p* equal
    # to t* therefore bounds every distribution's min I by t*, independently of the solver.
    kernel, dist, solution = minmax176
    k = kernel_matrix(kernel, GRID176, GRID176)
    assert (k @ dist.mass).max() <= solution.value + 1e-9
    rng = np.random.default_rng(0)
    for p in rng.dirichlet(np.full(GRID176.size, 0.3), size=200):
        assert (p @ k).min() <= solution.value + 1e-12


@pytest.mark.parametrize("kernel", ["abs", "area"])
def test_minmax_beats_every_other_strategy_on_min_quality(kernel):
    best = min_max(GRID176, kernel)[0].quality(kernel, GRID176).min()
    others = [
        single(0.5),
        discrete_uniform(),
        continuous_uniform(GRID176),
        max_average(GRID176, kernel, 0.1),
        max_average(GRID176, kernel, 1.0),
        max_average(GRID176, kernel, 10.0),
    ]
    for dist in others:
        assert dist.quality(kernel, GRID176).min() <= best + 1e-9


def test_solve_minmax_hand_computed_games():
    # Identity payoff: play both equally, value 1/2.
    sol = solve_minmax(np.eye(2))
    np.testing.assert_allclose(sol.mass, [0.5, 0.5], atol=1e-9)
    assert sol.value == pytest.approx(0.5)
    # diag(2, 1): p = (1/3, 2/3) equalises 2 p0 = p1, value 2/3.
    sol = solve_minmax(np.diag([2.0, 1.0]))
    np.testing.assert_allclose(sol.mass, [1 / 3, 2 / 3], atol=1e-9)
    assert sol.value == pytest.approx(2 / 3)
    # Two mpps 0.5 apart with K_abs: (1 + 1/1.5) / 2.
    dist, sol = min_max(np.array([0.5, 1.0]), "abs")
    assert sol.value == pytest.approx(5 / 6)
    assert dist.atoms.all()


@pytest.mark.parametrize("kernel", ["abs", "area"])
def test_inverse_and_direct_formulations_agree(kernel):
    k = kernel_matrix(kernel, GRID176, GRID176)
    fast, direct = solve_minmax(k), solve_minmax(k, "direct")
    assert (fast.formulation, direct.formulation) == ("inverse", "direct")
    np.testing.assert_allclose(fast.mass, direct.mass, atol=1e-9)
    assert fast.value == pytest.approx(direct.value, abs=1e-12)


def test_non_flat_optimum_in_both_formulations():
    # Column y1 is dominated (0.2 p0 + 0.1 p1 < p0 + 0.2 p1), so the optimum is p = (1, 0) with
    # value 0.2 and I(y0) = 1 > t*: the slack basis is not optimal and the simplex must pivot.
    k = np.array([[1.0, 0.2], [0.2, 0.1]])
    for formulation in ("auto", "direct"):
        sol = solve_minmax(k, formulation)
        np.testing.assert_allclose(sol.mass, [1.0, 0.0], atol=1e-9)
        assert sol.value == pytest.approx(0.2)


def test_singular_or_rectangular_kernel_matrices_use_the_direct_formulation():
    sol = solve_minmax(np.ones((2, 2)))
    assert sol.formulation == "direct" and sol.value == pytest.approx(1.0)
    rect = kernel_matrix("abs", GRID176[::5], GRID176)
    sol = solve_minmax(rect)
    assert sol.formulation == "direct"
    assert (sol.mass @ rect).min() == pytest.approx(sol.value)
    with pytest.raises(MagflowError, match="not invertible"):
        solve_minmax(np.ones((2, 2)), "inverse")


def test_cu_is_uniform_and_close_to_the_continuous_integral():
    dist = continuous_uniform(GRID176)
    np.testing.assert_allclose(dist.mass, 1 / 176)
    widths = dist.cell_hi - dist.cell_lo
    np.testing.assert_allclose(widths, (HI - LO) / 176)  # equal cells tile [lo, hi]
    assert dist.cell_lo[0] == LO and dist.cell_hi[-1] == pytest.approx(HI)
    np.testing.assert_allclose(dist.cell_lo[1:], dist.cell_hi[:-1])
    y = GRID176
    exact_abs = (np.log1p(y - LO) + np.log1p(HI - y)) / (HI - LO)
    exact_area = ((y**3 - LO**3) / (3 * y**2) + y - y**2 / HI) / (HI - LO)
    np.testing.assert_allclose(dist.quality("abs", y), exact_abs, atol=0.01)
    np.testing.assert_allclose(dist.quality("area", y), exact_area, atol=0.01)


@pytest.mark.parametrize("kernel", ["abs", "area"])
def test_maxavg_tends_to_cu_as_lambda_grows(kernel):
    dist = max_average(GRID176, kernel, 1e6)
    uniform = continuous_uniform(GRID176)
    np.testing.assert_allclose(dist.mass, uniform.mass, rtol=1e-5)
    np.testing.assert_array_equal(dist.cell_lo, uniform.cell_lo)


def _argmax_kbar(kernel):
    # Independent: the continuous K̄(x) maximiser. abs is symmetric about the centre; for area,
    # d/dx [(x^3 - lo^3) / (3x^2) + x - x^2/hi] = 4/3 + 2 lo^3 / (3 x^3) - 2x / hi = 0.
    if kernel == "abs":
        return (LO + HI) / 2
    return brentq(lambda x: 4 / 3 + 2 * LO**3 / (3 * x**3) - 2 * x / HI, LO, HI)


@pytest.mark.parametrize("kernel", ["abs", "area"])
def test_maxavg_concentrates_at_argmax_kbar_as_lambda_vanishes(kernel):
    dist = max_average(GRID176, kernel, 1e-7)
    near = np.abs(dist.support - _argmax_kbar(kernel)) <= 0.02
    assert dist.mass[near].sum() > 0.99


def test_maxavg_is_monotone_in_kbar():
    dist = max_average(GRID176, "abs", 1.0)
    kbar = kernel_matrix("abs", GRID176, GRID176).mean(axis=1)
    np.testing.assert_allclose(np.log(dist.mass) - kbar, (np.log(dist.mass) - kbar)[0], atol=1e-12)


def test_du_and_single_are_atoms():
    du = discrete_uniform()
    assert du.support.tolist() == [0.25, 0.5, 1.0, 2.0]
    assert du.atoms.all() and np.allclose(du.mass, 0.25)
    one = single(0.5)
    assert one.quality("abs", [0.5, 1.5]).tolist() == [1.0, 0.5]


def test_build_sampler_uses_the_configured_grid_and_reports_the_solver():
    sampler = build_sampler(SamplerConfig("cu_minmax", "abs", grid_step=0.01))
    assert sampler.grid.size == 176
    assert sampler.solver["status"] == 0 and sampler.solver["method"].startswith("highs")
    assert sampler.min_quality == pytest.approx(sampler.solver["value"], abs=1e-9)
    assert sampler.mean_quality == pytest.approx(sampler.min_quality, abs=1e-7)
    assert build_sampler(SamplerConfig("cu_maxavg", "abs", grid_step=0.01)).config.effective_lam == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "zigzag"}, r"unknown strategy 'zigzag'.*single, du, cu, cu_maxavg, cu_minmax"),
        ({"strategy": "cu", "kernel": "gauss"}, r"unknown kernel 'gauss'"),
        ({"strategy": "cu_maxavg", "lam": 0.0}, r"lam must be > 0 .*got 0.0"),
        ({"strategy": "cu_maxavg", "lam": -1.0}, r"lam must be > 0"),
        ({"strategy": "cu", "lam": 1.0}, r"lam applies to cu_maxavg only"),
        ({"strategy": "du", "du_mpps": ()}, r"du_mpps: the list is empty"),
        ({"strategy": "du", "du_mpps": (0.5, 0.5)}, r"lists an mpp twice"),
        ({"strategy": "du", "du_mpps": (0.1, 0.5)}, r"outside the range"),
        ({"strategy": "cu", "lo": 2.0, "hi": 2.0}, r"samplers.range: need 0 < lo < hi, got \[2.0, 2.0\]"),
        ({"strategy": "cu", "lo": 1.0, "hi": 0.5}, r"samplers.range"),
        ({"strategy": "cu", "grid_step": 0.0}, r"samplers.grid_step"),
        ({"strategy": "single"}, r"'single' needs mpp in \[0.25, 2.0\], got None"),
        ({"strategy": "single", "mpp": 3.0}, r"'single' needs mpp"),
        ({"strategy": "cu", "mpp": 0.5}, r"mpp applies to single only"),
    ],
)
def test_bad_sampler_config_is_refused_with_a_clear_message(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SamplerConfig(**kwargs)


def test_max_average_refuses_non_positive_lambda():
    with pytest.raises(ConfigError, match="lam must be > 0"):
        max_average(GRID176, "abs", 0.0)
