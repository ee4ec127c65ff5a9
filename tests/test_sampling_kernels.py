"""Transfer kernels: hand-computed values, symmetry and the registry."""

import numpy as np
import pytest

from magflow.errors import ConfigError
from magflow.sampling import KERNELS, get_kernel, kernel_matrix, register_kernel


def test_abs_kernel_values():
    k = get_kernel("abs")
    assert k(np.array(0.5), np.array(0.5)) == 1.0
    assert k(np.array(0.25), np.array(2.0)) == pytest.approx(1 / 2.75)
    assert k(np.array(1.0), np.array(0.5)) == pytest.approx(2 / 3)


def test_area_kernel_values():
    k = get_kernel("area")
    assert k(np.array(0.5), np.array(1.0)) == pytest.approx(0.25)  # a 2x coarser view shares 1/4 of the area
    assert k(np.array(2.0), np.array(0.25)) == pytest.approx(1 / 64)
    assert k(np.array(0.7), np.array(0.7)) == 1.0


@pytest.mark.parametrize("name", ["abs", "area"])
def test_kernel_matrix_is_symmetric_with_unit_diagonal(name):
    x = np.linspace(0.25, 2.0, 11)
    m = kernel_matrix(name, x, x)
    assert m.shape == (11, 11)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert np.all((m > 0) & (m <= 1))


def test_kernel_matrix_rectangular_orientation():
    m = kernel_matrix("abs", [0.25, 1.25], [0.25, 0.75, 2.25])
    np.testing.assert_allclose(m, [[1, 1 / 1.5, 1 / 3], [1 / 2, 1 / 1.5, 1 / 2]])


def test_register_a_kernel_in_a_few_lines():
    try:

        @register_kernel("test_gauss")
        def gauss(x, y):
            return np.exp(-((x - y) ** 2))

        assert get_kernel("test_gauss") is gauss
        np.testing.assert_allclose(kernel_matrix("test_gauss", [0.0], [1.0]), [[np.exp(-1)]])
        with pytest.raises(ValueError, match="already registered"):
            register_kernel("test_gauss")(gauss)
    finally:
        KERNELS.pop("test_gauss", None)


def test_unknown_kernel_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown kernel 'gauss'.*abs, area"):
        get_kernel("gauss")
