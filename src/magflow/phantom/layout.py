"""Where the phantom's tissue and classes are: the label grid and the architecture fields.

Everything here is defined in µm on the label grid (cell = ``label_mpp`` µm) from the seed
alone, so a phantom rendered at another mpp has exactly the same layout and labels.
The architecture is stored as clipped signed distances (µm, positive inside), which stay
smooth when interpolated to the much finer pixel grid of the slide.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
from scipy import ndimage

from .cross import plant_cross_scale
from .design import CLASS_INDEX, CLASSES, COMMON_CLASSES, RARE_CLASS, PhantomParams
from .noise import cell_index, jittered_hex_lattice, nearest_centre, smooth_noise, stream

CLIP_UM = 12.0  # signed distances are clipped here: only the boundaries matter


@dataclass(frozen=True)
class PhantomLayout:
    """Class labels and architecture fields on the label grid."""

    cell_um: float
    labels: np.ndarray  # uint8 class index per cell, 0 = glass
    sd_tissue: np.ndarray  # float32 signed distance to the tissue edge, µm
    sd_epithelium: np.ndarray  # float32 signed distance to the epithelial (cell) compartments
    sd_lumen: np.ndarray  # float32 signed distance to gland lumens


def grid_shape(width_um: float, height_um: float, cell_um: float) -> tuple[int, int]:
    """(rows, cols) of a grid of ``cell_um`` cells covering the slide."""
    return int(np.ceil(height_um / cell_um - 1e-9)), int(np.ceil(width_um / cell_um - 1e-9))


def build_layout(
    width_um: float, height_um: float, cell_um: float, seed: int, label: int, tissue: bool,
    params: PhantomParams, cross_scale: int | None = None,
) -> PhantomLayout:
    """Tissue fragments, class regions, the rare class (iff ``label == 1``) and architecture.

    With ``cross_scale`` 0 or 1 the sheet and nest regions are planted instead with the cross-scale
    arrangement (``magflow.phantom.cross``); the rare class is then present iff ``cross_scale == 1``.
    """
    shape = grid_shape(width_um, height_um, cell_um)
    mask = _tissue_mask(stream(seed, "tissue"), shape, params) if tissue else np.zeros(shape, bool)
    labels = _regions(stream(seed, "regions"), mask, cell_um, params)
    nests = jittered_hex_lattice(stream(seed, "nests"), width_um, height_um, params.nest_spacing_um, 0.1)
    if cross_scale is None and label == 1 and mask.any():
        _add_rare(stream(seed, "rare"), labels, mask, nests, cell_um, params)
    sd_tissue = (ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)) * cell_um
    sd_tissue = np.where(mask, sd_tissue - 0.5 * cell_um, sd_tissue + 0.5 * cell_um)
    fields, gland_lumen = _architecture_fields(seed, shape, nests, cell_um, width_um, height_um, params)
    if cross_scale is not None:
        plant_cross_scale(stream(seed, "cross-scale"), labels, cross_scale, fields["nests"], sd_tissue, cell_um,
                          params)
    sd_epi, sd_lumen = _compose_architecture(labels, fields, gland_lumen)
    smooth = [ndimage.gaussian_filter(np.clip(f, -CLIP_UM, CLIP_UM).astype(np.float32), 0.75)
              for f in (sd_tissue, sd_epi, sd_lumen)]
    return PhantomLayout(cell_um, labels, *smooth)


def _tissue_mask(rng: np.random.Generator, shape: tuple[int, int], params: PhantomParams) -> np.ndarray:
    """One to three irregular fragments (Gaussian blobs roughened by noise) covering a seeded
    fraction of the slide, fading out before its edges."""
    v, u = np.meshgrid((np.arange(shape[0]) + 0.5) / shape[0], (np.arange(shape[1]) + 0.5) / shape[1],
                       indexing="ij")
    n_fragments = int(rng.integers(1, 4))
    envelope = np.zeros(shape, dtype=np.float32)
    for _ in range(n_fragments):
        cx, cy = rng.uniform(0.25, 0.75, size=2)
        a, b = rng.uniform(0.18, 0.35, size=2) / np.sqrt(n_fragments)
        t = rng.uniform(0, np.pi)
        du, dv = u - cx, v - cy
        p, q = np.cos(t) * du + np.sin(t) * dv, -np.sin(t) * du + np.cos(t) * dv
        envelope = np.maximum(envelope, np.exp(-((p / a) ** 2 + (q / b) ** 2)))
    side = min(shape)
    field = envelope + 0.3 * smooth_noise(rng, shape, 0.06 * side) + 0.08 * smooth_noise(rng, shape, 0.015 * side)
    to_border = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v))
    field -= 2.0 * np.clip(1 - to_border / 0.15, 0, 1) ** 2
    fraction = rng.uniform(*params.tissue_fraction_range)
    mask = ndimage.binary_fill_holes(field > np.quantile(field, 1 - fraction))
    parts, _ = ndimage.label(mask)
    sizes = np.bincount(parts.ravel())[1:]
    return np.isin(parts, np.flatnonzero(sizes >= 0.02 * sizes.max()) + 1)


def _regions(rng: np.random.Generator, mask: np.ndarray, cell_um: float, params: PhantomParams) -> np.ndarray:
    """Split the tissue into warped Voronoi regions; every common class appears once per 6 regions."""
    labels = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return labels
    diameter = params.region_diameter_um / cell_um
    n_target = max(1, round(mask.sum() / (np.pi * (diameter / 2) ** 2)))
    candidates = rng.permutation(np.argwhere(mask))[: 50 * n_target].astype(np.float64)
    seeds = [candidates[0]]
    for point in candidates[1:]:
        if len(seeds) == n_target:
            break
        if np.min(np.hypot(*(np.asarray(seeds) - point).T)) > 0.7 * diameter:
            seeds.append(point)
    order = list(chain.from_iterable(rng.permutation(COMMON_CLASSES) for _ in range(len(seeds) // 6 + 1)))
    seed_class = np.asarray(order[: len(seeds)], np.uint8)
    centres_um = (np.asarray(seeds)[:, ::-1] + 0.5) * cell_um
    nearest, _ = nearest_centre(centres_um, cell_um, mask.shape)
    warp = [np.rint(0.25 * diameter * smooth_noise(rng, mask.shape, 0.3 * diameter)).astype(np.intp)
            for _ in range(2)]
    rows, cols = np.indices(mask.shape)
    rows = np.clip(rows + warp[0], 0, mask.shape[0] - 1)
    cols = np.clip(cols + warp[1], 0, mask.shape[1] - 1)
    labels[mask] = seed_class[nearest[rows, cols]][mask]
    return labels


def _add_rare(
    rng: np.random.Generator, labels: np.ndarray, mask: np.ndarray, nests: np.ndarray, cell_um: float,
    params: PhantomParams,
) -> None:
    """Paint one to three round patches of the rare class, each centred on a nest, deep in tissue."""
    tissue_um2 = mask.sum() * cell_um**2
    target_um2 = rng.uniform(*params.rare_fraction_range) * tissue_um2
    n_patches = int(np.clip(round(target_um2 / (np.pi * 150.0**2)), 1, 3))
    radius = max(np.sqrt(target_um2 / n_patches / np.pi), params.nest_radius_um + 15.0)
    depth = ndimage.distance_transform_edt(mask) * cell_um
    rows, cols = cell_index(nests, cell_um, mask.shape) if len(nests) else (np.zeros(0, int),) * 2
    candidates = nests[depth[rows, cols] >= 0.8 * radius]
    if len(candidates) == 0:  # small tissue: use the deepest tissue point
        r, c = np.unravel_index(np.argmax(depth), mask.shape)
        candidates = np.array([[(c + 0.5) * cell_um, (r + 0.5) * cell_um]])
    candidates = rng.permutation(candidates)
    yy, xx = (np.indices(mask.shape) + 0.5) * cell_um
    wobble = 1 + 0.12 * smooth_noise(rng, mask.shape, 15.0 / cell_um)
    chosen: list[np.ndarray] = []
    for centre in candidates:
        if any(np.hypot(*(centre - c)) < 2.5 * radius for c in chosen):
            continue
        chosen.append(centre)
        parts, _ = ndimage.label((np.hypot(xx - centre[0], yy - centre[1]) < radius * wobble) & mask)
        sizes = np.bincount(parts.ravel())
        if len(sizes) > 1:  # keep one compact patch, not its stray specks
            labels[parts == np.argmax(sizes[1:]) + 1] = RARE_CLASS
        if len(chosen) == n_patches:
            break


def _architecture_fields(
    seed: int, shape: tuple[int, int], nests: np.ndarray, cell_um: float, width_um: float, height_um: float,
    params: PhantomParams,
) -> tuple[dict[str, np.ndarray | float], np.ndarray]:
    """Each architecture's signed distance (µm) to its epithelial compartment over the whole grid, and
    the signed distance to gland lumens; none depends on the class labels."""
    rng = stream(seed, "architecture")
    wobble = 5.0 * smooth_noise(rng, shape, 8.0 / cell_um)  # µm, roughens every boundary

    glands = jittered_hex_lattice(stream(seed, "glands"), width_um, height_um, params.gland_spacing_um, 0.08)
    near, dist = nearest_centre(glands, cell_um, shape)
    outer = params.gland_outer_radius_um * (1 + 0.08 * rng.standard_normal(len(glands) + 1))[near]
    lumen = params.gland_lumen_radius_um * (1 + 0.15 * rng.standard_normal(len(glands) + 1))[near]
    dist = dist + wobble
    gland_epi, gland_lumen = np.minimum(dist - lumen, outer - dist), lumen - dist

    near, dist = nearest_centre(nests, cell_um, shape)
    nest_radius = params.nest_radius_um * (1 + 0.1 * rng.standard_normal(len(nests) + 1))[near]
    nest_epi = nest_radius - (dist + wobble)

    yy, xx = (np.indices(shape) + 0.5) * cell_um
    angle = rng.uniform(0, np.pi)
    across = np.cos(angle) * xx + np.sin(angle) * yy + 25.0 * smooth_noise(rng, shape, 60.0 / cell_um)
    period = params.band_period_um
    band_epi = (0.25 - np.abs(np.mod(across / period, 1.0) - 0.5)) * period + wobble

    return {"sheet": CLIP_UM, "glands": gland_epi, "bands": band_epi, "nests": nest_epi}, gland_lumen


def _compose_architecture(
    labels: np.ndarray, by_architecture: dict[str, np.ndarray | float], gland_lumen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (µm) to the epithelial compartment and to lumens, class by class."""
    sd_epi = np.full(labels.shape, -CLIP_UM, np.float32)
    for index, cls in enumerate(CLASSES):
        if cls.architecture in by_architecture:
            sd_epi = np.where(labels == index, by_architecture[cls.architecture], sd_epi)
    sd_lumen = np.where(labels == CLASS_INDEX["glandular"], gland_lumen, -CLIP_UM)
    return sd_epi.astype(np.float32), sd_lumen.astype(np.float32)
