"""The phantom's tissue classes and the physical sizes (µm) that define them.

Two cell types (small dense vs large sparse nuclei, same nuclear area fraction and colours)
are each arranged in three architectures (diffuse sheet, a periodic architecture, round nests),
plus stroma. So cell type is visible only at high magnification, architecture only at low
magnification, and some pairs differ in one of the two only.
"""

from __future__ import annotations

from dataclasses import dataclass

GENERATOR_VERSION = "2"  # 2: the cross-scale label (magflow.phantom.cross); slides without it are unchanged


@dataclass(frozen=True)
class PhantomClass:
    """One tissue class: which cells, arranged how, and at which scale it is told apart."""

    name: str
    cells: str  # "small", "large", "stroma" or "none"
    architecture: str  # "none", "sheet", "glands", "bands" or "nests"
    description: str


CLASSES: tuple[PhantomClass, ...] = (
    PhantomClass("background", "none", "none", "glass, no tissue"),
    PhantomClass(
        "stroma", "stroma", "none",
        "pink fibrous eosin with sparse spindle nuclei; told apart by colour at any scale",
    ),
    PhantomClass(
        "small_dense", "small", "sheet",
        "diffuse sheet of small dense nuclei; told from large_sparse only at cell scale "
        "(<= 0.5 µm/px), from glandular/lobular only by architecture (>= 1 µm/px)",
    ),
    PhantomClass(
        "large_sparse", "large", "sheet",
        "diffuse sheet of large sparse nuclei (same nuclear area fraction and colours as "
        "small_dense); told from small_dense only at cell scale (<= 0.5 µm/px)",
    ),
    PhantomClass(
        "glandular", "small", "glands",
        "small_dense cells in rings around lumens (gland diameter ~180 µm); told from "
        "small_dense only by architecture (>= 1 µm/px)",
    ),
    PhantomClass(
        "banded", "large", "bands",
        "large_sparse cells in parallel bands alternating with stroma (period ~180 µm); "
        "told from large_sparse only by architecture (>= 1 µm/px)",
    ),
    PhantomClass(
        "lobular", "small", "nests",
        "small_dense cells in round nests separated by stroma septa (nest diameter ~130 µm); "
        "told from rare only at cell scale, from small_dense only by architecture",
    ),
    PhantomClass(
        "rare", "large", "nests",
        "large_sparse cells in round nests, present iff the slide label is 1; told from "
        "lobular only at cell scale and from large_sparse/banded only by architecture, so "
        "it needs both scales",
    ),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
COMMON_CLASSES: tuple[int, ...] = tuple(
    CLASS_INDEX[n] for n in ("stroma", "small_dense", "large_sparse", "glandular", "banded", "lobular")
)
RARE_CLASS: int = CLASS_INDEX["rare"]


@dataclass(frozen=True)
class PhantomParams:
    """Physical design constants (µm unless named otherwise); recorded in every sidecar."""

    tissue_fraction_range: tuple[float, float] = (0.35, 0.55)  # of the slide area
    region_diameter_um: float = 450.0  # typical size of one class region
    rare_fraction_range: tuple[float, float] = (0.02, 0.05)  # of the tissue area
    small_nucleus_radius_um: float = 2.5
    large_nucleus_radius_um: float = 5.0
    nuclear_area_fraction: float = 0.22  # same for both cell types
    nucleus_size_sd: float = 0.12  # log-normal spread of nucleus radius
    nucleus_max_aspect: float = 1.4
    gland_spacing_um: float = 210.0
    gland_outer_radius_um: float = 90.0
    gland_lumen_radius_um: float = 32.0
    band_period_um: float = 180.0
    nest_spacing_um: float = 165.0
    nest_radius_um: float = 65.0
    fibroblasts_per_mm2: float = 900.0

    @property
    def nucleus_margin_um(self) -> float:
        """How far inside their compartment (and the tissue) epithelial nuclei are centred, for both cell types."""
        return 0.6 * self.small_nucleus_radius_um
