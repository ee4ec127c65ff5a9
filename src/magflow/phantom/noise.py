"""Seeded random streams, smooth noise, jittered lattices and grid look-ups for the phantom."""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per purpose, so changing one part never reshuffles another."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_cells: float) -> np.ndarray:
    """Gaussian-filtered white noise (periodic, via FFT), scaled to zero mean and unit std."""
    white = rng.standard_normal(shape)
    spectrum = ndimage.fourier_gaussian(np.fft.rfft2(white), sigma_cells, n=shape[1])
    field = np.fft.irfft2(spectrum, s=shape)
    field -= field.mean()
    return (field / max(field.std(), 1e-12)).astype(np.float32)


def jittered_hex_lattice(
    rng: np.random.Generator, width_um: float, height_um: float, spacing_um: float, jitter: float
) -> np.ndarray:
    """Points (x, y) in µm inside the slide: a randomly rotated hexagonal lattice, jittered.

    ``jitter`` is the standard deviation of the displacement as a fraction of the spacing.
    A hard-core-like pattern: neighbours rarely come closer than the spacing minus the jitter.
    """
    radius = 0.5 * np.hypot(width_um, height_um) + 2 * spacing_um
    row_step = spacing_um * np.sqrt(3) / 2
    rows = np.arange(-np.ceil(radius / row_step), np.ceil(radius / row_step) + 1)
    cols = np.arange(-np.ceil(radius / spacing_um), np.ceil(radius / spacing_um) + 1)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    u = (c + 0.5 * (r % 2)) * spacing_um
    v = r * row_step
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(0, spacing_um, size=2)
    x = np.cos(angle) * u - np.sin(angle) * v + width_um / 2 + offset[0]
    y = np.sin(angle) * u + np.cos(angle) * v + height_um / 2 + offset[1]
    pts = np.stack([x.ravel(), y.ravel()], axis=1)
    pts += rng.normal(0, jitter * spacing_um, size=pts.shape)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < width_um) & (pts[:, 1] >= 0) & (pts[:, 1] < height_um)
    return pts[inside]


def cell_index(points_um: np.ndarray, cell_um: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the grid cell containing each (x, y) point."""
    rows = np.clip((points_um[:, 1] // cell_um).astype(np.intp), 0, shape[0] - 1)
    cols = np.clip((points_um[:, 0] // cell_um).astype(np.intp), 0, shape[1] - 1)
    return rows, cols


def sample_bilinear(field: np.ndarray, points_um: np.ndarray, cell_um: float) -> np.ndarray:
    """Bilinear value of a grid field (cell centres at (i + 0.5) * cell_um) at (x, y) points."""
    coords = [points_um[:, 1] / cell_um - 0.5, points_um[:, 0] / cell_um - 0.5]
    return ndimage.map_coordinates(field, coords, order=1, mode="nearest")


def nearest_centre(centres_um: np.ndarray, cell_um: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each grid cell: the index of the nearest centre and the exact distance to it (µm).

    With no centres at all, every index is -1 and every distance infinite.

    The nearest centre is found with a Euclidean distance transform over the marked cells,
    then the distance is recomputed from the cell centre to the centre's exact position.
    """
    if len(centres_um) == 0:
        return np.full(shape, -1, dtype=np.int64), np.full(shape, np.inf, dtype=np.float32)
    ids = np.full(shape, -1, dtype=np.int64)
    rows, cols = cell_index(centres_um, cell_um, shape)
    ids[rows, cols] = np.arange(len(centres_um))
    _, (near_r, near_c) = ndimage.distance_transform_edt(ids < 0, return_indices=True)
    nearest = ids[near_r, near_c]
    yy, xx = np.indices(shape, dtype=np.float32)
    dx = (xx + 0.5) * cell_um - centres_um[nearest, 0]
    dy = (yy + 0.5) * cell_um - centres_um[nearest, 1]
    return nearest, np.hypot(dx, dy).astype(np.float32)
