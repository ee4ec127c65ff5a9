"""Draw the phantom's level-0 RGB pixels from its layout, textures and nuclei.

Colour follows Beer-Lambert absorption of haematoxylin (H) and eosin (E):
``I = I0 * 10 ** -(H * h + E * e)``, looked up in a table of quantised (H, E) pairs. The image
is drawn in strips of a few rows so that per-pixel temporaries stay in cache; nuclei are
stamped once beforehand, vectorised, as sprites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .cells import Nuclei, Textures
from .layout import PhantomLayout
from .noise import smooth_noise, stream
from .sprites import rasterise_nuclei

# Stain vectors (OD per unit stain, R G B): the reference H&E vectors commonly used with
# Macenko stain normalisation.
H_VECTOR = np.array([0.5626, 0.7201, 0.4062])
E_VECTOR = np.array([0.2159, 0.8012, 0.5581])
GLASS_RGB = np.array([243.0, 242.0, 245.0])  # illumination I0
# (H, E) optical densities of the compartments.
STROMA_OD = (0.03, 0.22)
CYTOPLASM_OD = (0.10, 0.15)
LUMEN_OD = (0.01, 0.03)
NUCLEUS_E_OD = 0.10
CYTOPLASM_GRAIN = 0.015  # eosin OD swing of the fine cytoplasm texture
FIBRE_CONTRAST = 0.45  # relative eosin swing of collagen fibres
FIBRE_TABLE_STEP_UM = 0.125
PIXEL_NOISE_STEPS = 1.5  # std of the per-pixel noise, in colour-table steps (~1.2 grey levels)
STRIP_ROWS = 32
NOISE_ROWS = 512  # a multiple of STRIP_ROWS
# Colour table: quantised (H, E) optical densities -> RGB; cheaper than three exp() per pixel.
H_RANGE, H_LEVELS = (-0.05, 3.4), 1024
E_RANGE, E_LEVELS = (-0.05, 1.2), 512


@dataclass(frozen=True)
class _Axis:
    """Bilinear interpolation weights from pixel centres onto one axis of the label grid."""

    lo: np.ndarray
    hi: np.ndarray
    frac: np.ndarray


def _axis(centres_um: np.ndarray, cell_um: float, n: int) -> _Axis:
    u = np.clip(centres_um / cell_um - 0.5, 0, n - 1)
    lo = np.minimum(np.floor(u).astype(np.intp), max(n - 2, 0))
    return _Axis(lo, np.minimum(lo + 1, n - 1), (u - lo).astype(np.float32))


class _StripFields:
    """The label-grid fields of one strip of rows, interpolated bilinearly to pixels on demand.

    Columns are interpolated first, on the few grid rows the strip touches; rows then need
    only whole-row copies, which keeps the per-pixel cost to about three operations per field.
    """

    def __init__(self, stack: np.ndarray, rows: _Axis, cols: _Axis) -> None:
        first, last = rows.lo.min(), rows.hi.max() + 1
        block = stack[:, first:last]
        left = block[:, :, cols.lo]
        self.values = left + (block[:, :, cols.hi] - left) * cols.frac
        self.steps = np.zeros_like(self.values)
        np.subtract(self.values[:, 1:], self.values[:, :-1], out=self.steps[:, :-1])
        self.lo = rows.lo - first
        self.frac = rows.frac[:, None]

    def __call__(self, index: int) -> np.ndarray:
        out = self.steps[index][self.lo]
        out *= self.frac
        out += self.values[index][self.lo]
        return out


def _ramp(signed_um: np.ndarray, width_um: float) -> np.ndarray:
    """Anti-aliased inside-ness (0..1) from a signed distance, in place."""
    signed_um *= np.float32(1 / width_um)
    signed_um += np.float32(0.5)
    return np.clip(signed_um, 0.0, 1.0, out=signed_um)


def colour_table() -> np.ndarray:
    """RGB (uint8) for every quantised (H, E) pair, indexed by ``h_index * E_LEVELS + e_index``."""
    h = np.linspace(*H_RANGE, H_LEVELS)[:, None, None]
    e = np.linspace(*E_RANGE, E_LEVELS)[None, :, None]
    rgb = GLASS_RGB * 10.0 ** -(h * H_VECTOR + e * E_VECTOR)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)


def fibre_profile(rng: np.random.Generator, mpp: float) -> np.ndarray:
    """Eosin gain across the fibres, sampled every FIBRE_TABLE_STEP_UM µm (periodic, 2**16 long).

    Band-pass noise: fibres ~1 µm wide at irregular 2-5 µm spacing, so no single spatial
    frequency dominates (a pure sinusoid would alias into moiré at low magnification).
    Finer detail than the pixel is removed by a Gaussian pixel aperture.
    """
    fine = np.hypot(0.5, 0.5 * mpp) / FIBRE_TABLE_STEP_UM
    white = rng.standard_normal(2**16)
    band = ndimage.gaussian_filter1d(white, fine, mode="wrap") - ndimage.gaussian_filter1d(
        white, 2.0 / FIBRE_TABLE_STEP_UM, mode="wrap")
    reference = np.hypot(0.5, 0.125) / FIBRE_TABLE_STEP_UM  # std at full detail, so coarse mpp fades
    scale = (ndimage.gaussian_filter1d(white, reference, mode="wrap")
             - ndimage.gaussian_filter1d(white, 2.0 / FIBRE_TABLE_STEP_UM, mode="wrap")).std()
    return (1 + FIBRE_CONTRAST * np.clip(band / scale, -2, 2.5)).astype(np.float32)


def render_rgb(
    layout: PhantomLayout, textures: Textures, nuclei: Nuclei, shape: tuple[int, int], mpp: float, seed: int
) -> np.ndarray:
    """Level-0 RGB (uint8, rows x cols x 3) at ``mpp`` µm/px."""
    height, width = shape
    coverage, nuclear_h = rasterise_nuclei(nuclei, shape, mpp, seed)
    stack = np.stack([layout.sd_tissue, layout.sd_lumen, layout.sd_epithelium, textures.fibre_coord_um,
                      textures.fibre_contrast, textures.stain]).astype(np.float32)
    cols = _axis((np.arange(width) + 0.5) * mpp, layout.cell_um, stack.shape[2])
    rng = stream(seed, "pixel-noise")
    profile = fibre_profile(rng, mpp)
    noise = rng.standard_normal((NOISE_ROWS, width + 128), dtype=np.float32) * PIXEL_NOISE_STEPS + 0.5
    # Periodic along rows, so consecutive strips continue it seamlessly.
    grain = CYTOPLASM_GRAIN * smooth_noise(rng, (NOISE_ROWS, width), max(0.7 / mpp, 0.5))
    table = colour_table()
    rgb = np.empty((height, width, 3), np.uint8)
    for r0 in range(0, height, STRIP_ROWS):
        r1 = min(height, r0 + STRIP_ROWS)
        up = _StripFields(stack, _axis((np.arange(r0, r1) + 0.5) * mpp, layout.cell_um, stack.shape[1]), cols)
        repeat = slice(r0 % NOISE_ROWS, r0 % NOISE_ROWS + r1 - r0)
        h_od, e_od = _stain_densities(up, coverage[r0:r1], nuclear_h[r0:r1], profile, grain[repeat], mpp)
        shift = int(rng.integers(0, 128))
        _colour(h_od, e_od, noise[repeat, shift:shift + width], table, out=rgb[r0:r1])
    return rgb


def _stain_densities(
    up: _StripFields, coverage: np.ndarray, nuclear_h: np.ndarray, profile: np.ndarray, grain: np.ndarray,
    mpp: float,
) -> tuple[np.ndarray, np.ndarray]:
    """H and E optical densities of one strip: compartments, fibres, nuclei, stain drift."""
    edge = max(mpp, 0.8)
    in_tissue = _ramp(up(0), max(mpp, 1.0))
    in_lumen = _ramp(up(1), edge)
    in_cells = _ramp(up(2), edge)  # lumen and cell compartments are complementary at their border
    fibre_index = (up(3) * np.float32(1 / FIBRE_TABLE_STEP_UM)).astype(np.int32)
    fibre_index &= profile.size - 1
    stroma_e = np.take(profile, fibre_index) - 1
    stroma_e *= up(4)
    stroma_e += 1
    stroma_e *= STROMA_OD[1]
    h_bg = STROMA_OD[0] + in_cells * (CYTOPLASM_OD[0] - STROMA_OD[0]) + in_lumen * (LUMEN_OD[0] - STROMA_OD[0])
    e_bg = stroma_e + in_cells * (CYTOPLASM_OD[1] - stroma_e + grain)
    e_bg += in_lumen * (LUMEN_OD[1] - stroma_e)
    nucleus = coverage * np.float32(1 / 255)
    scale = up(5)
    scale *= in_tissue
    h_od = (1 - nucleus) * h_bg
    h_od += nuclear_h * np.float32(1 / 100)
    h_od *= scale
    e_od = (1 - nucleus) * e_bg
    e_od += nucleus * np.float32(NUCLEUS_E_OD)
    e_od *= scale
    return h_od, e_od


def _colour(h_od: np.ndarray, e_od: np.ndarray, noise: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """Quantise (H, E) with dithering noise and look their RGB up in ``table``, into ``out``."""
    h_od -= H_RANGE[0]
    h_od *= np.float32((H_LEVELS - 1) / (H_RANGE[1] - H_RANGE[0]))
    h_od += noise
    e_od -= E_RANGE[0]
    e_od *= np.float32((E_LEVELS - 1) / (E_RANGE[1] - E_RANGE[0]))
    e_od += noise
    index = np.clip(h_od, 0, H_LEVELS - 1, out=h_od).astype(np.int32)
    index *= E_LEVELS
    index += np.clip(e_od, 0, E_LEVELS - 1, out=e_od).astype(np.int32)
    np.take(table, index, axis=0, out=out)
