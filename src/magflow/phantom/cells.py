"""The phantom's nuclei (positions and shapes in µm) and its stromal fibre and stain textures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .design import CLASSES, PhantomParams
from .layout import PhantomLayout
from .noise import cell_index, jittered_hex_lattice, sample_bilinear, smooth_noise, stream

SMALL, LARGE, FIBROBLAST = 0, 1, 2


@dataclass(frozen=True)
class Nuclei:
    """Elliptical nuclei: centre (x, y) µm, semi-axes µm, major-axis angle (rad), kind, darkness."""

    xy_um: np.ndarray
    semi_major_um: np.ndarray
    semi_minor_um: np.ndarray
    angle: np.ndarray
    kind: np.ndarray
    density: np.ndarray  # haematoxylin density relative to NUCLEUS_H_OD


@dataclass(frozen=True)
class Textures:
    """Smooth fields on the label grid that the renderer interpolates to pixels.

    Collagen fibres run along the level sets of ``fibre_coord_um = x·normal + warp(x)``: wavy,
    roughly parallel lines whose direction drifts; the renderer turns the coordinate into fibre
    intensity through a random 1-D profile. ``stain`` slowly modulates staining intensity.
    """

    fibre_coord_um: np.ndarray  # (rows, cols) float32
    fibre_contrast: np.ndarray  # (rows, cols) bundle-scale contrast, 0..1
    stain: np.ndarray  # (rows, cols) relative stain intensity, around 1


def make_textures(seed: int, layout: PhantomLayout) -> Textures:
    """Fibre direction, waviness and bundles, and a slow stain-intensity drift."""
    rng = stream(seed, "textures")
    shape, cell = layout.labels.shape, layout.cell_um
    angle = rng.uniform(0, np.pi)
    yy, xx = (np.indices(shape) + 0.5) * cell
    # Warp gradients stay well below 1, so the fibres rarely close into whorls.
    warp = 18.0 * smooth_noise(rng, shape, 50.0 / cell) + 2.0 * smooth_noise(rng, shape, 8.0 / cell)
    coord = np.cos(angle) * xx + np.sin(angle) * yy + warp
    contrast = np.clip(0.6 + 0.4 * smooth_noise(rng, shape, 4.0 / cell), 0, 1)
    stain = 1 + 0.015 * smooth_noise(rng, shape, 150.0 / cell)
    return Textures(coord.astype(np.float32), contrast.astype(np.float32), stain.astype(np.float32))


def place_nuclei(
    seed: int, layout: PhantomLayout, textures: Textures, width_um: float, height_um: float,
    params: PhantomParams,
) -> Nuclei:
    """Epithelial nuclei on jittered lattices thinned to their classes' cell compartments, and
    fibroblasts as a Poisson process in stroma, aligned with the fibres."""
    rng = stream(seed, "nuclei")
    parts = []
    cell_classes = {SMALL: "small", LARGE: "large"}
    margin = params.nucleus_margin_um
    for kind, radius in ((SMALL, params.small_nucleus_radius_um), (LARGE, params.large_nucleus_radius_um)):
        spacing = radius * np.sqrt(np.pi / (params.nuclear_area_fraction * np.sqrt(3) / 2))
        xy = jittered_hex_lattice(rng, width_um, height_um, spacing, 0.12)
        classes = [i for i, c in enumerate(CLASSES) if c.cells == cell_classes[kind]]
        keep = np.isin(layout.labels[cell_index(xy, layout.cell_um, layout.labels.shape)], classes)
        # The same margin (µm) for both cell types keeps their nuclear area fraction equal per region.
        keep &= sample_bilinear(layout.sd_epithelium, xy, layout.cell_um) > margin
        keep &= sample_bilinear(layout.sd_tissue, xy, layout.cell_um) > margin
        xy = xy[keep]
        scale = radius * np.exp(params.nucleus_size_sd * rng.standard_normal(len(xy)))
        aspect = np.sqrt(rng.uniform(1.0, params.nucleus_max_aspect, len(xy)))
        parts.append((xy, scale * aspect, scale / aspect, rng.uniform(0, np.pi, len(xy)),
                      np.full(len(xy), kind), rng.uniform(0.95, 1.15, len(xy))))

    area_mm2 = width_um * height_um * 1e-6
    xy = rng.uniform((0, 0), (width_um, height_um), size=(rng.poisson(params.fibroblasts_per_mm2 * area_mm2), 2))
    keep = sample_bilinear(layout.sd_tissue, xy, layout.cell_um) > 3.0
    keep &= sample_bilinear(layout.sd_epithelium, xy, layout.cell_um) < -3.0
    keep &= sample_bilinear(layout.sd_lumen, xy, layout.cell_um) < -3.0
    xy = xy[keep]
    parts.append((xy, 4.5 * np.exp(0.15 * rng.standard_normal(len(xy))),
                  1.2 * np.exp(0.1 * rng.standard_normal(len(xy))), _fibre_angle(textures, layout.cell_um, xy),
                  np.full(len(xy), FIBROBLAST), rng.uniform(1.2, 1.4, len(xy))))
    return Nuclei(*(np.concatenate(column) for column in zip(*parts)))


def _fibre_angle(textures: Textures, cell_um: float, xy: np.ndarray) -> np.ndarray:
    """Direction of the fibres at each point: perpendicular to the gradient of their coordinate."""
    gy, gx = np.gradient(textures.fibre_coord_um, cell_um)
    return np.arctan2(sample_bilinear(gy, xy, cell_um), sample_bilinear(gx, xy, cell_um)) + np.pi / 2
