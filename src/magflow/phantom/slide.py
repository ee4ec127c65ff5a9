"""Deterministic synthetic H&E-like phantom slides with ground-truth labels.

A phantom is an Aperio-style pyramidal TIFF (``write_phantom``) plus a uint8 PNG of class
indices at ``label_mpp`` and a JSON sidecar. Its classes differ at different scales (cell
detail vs architecture, see ``magflow.phantom.design``), so no single magnification separates them all.
A slide can also carry the planted cross-scale label (``PhantomSpec.cross_scale``, see
``magflow.phantom.cross``): told by neither cell type nor architecture alone, only by their combination.
The layout is defined in µm from the seed alone: the same seed at another ``mpp`` gives the
same tissue and labels, drawn at another resolution.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import __version__
from ..atomic import atomic_path
from ..defaults import schema_defaults
from ..errors import ConfigError
from magflow.slides.aperio_tiff import pyramid, write_aperio_tiff
from .cells import make_textures, place_nuclei
from .cross import PLANTED, scale_statistics
from .design import CLASS_NAMES, CLASSES, GENERATOR_VERSION, RARE_CLASS, PhantomParams
from .layout import PhantomLayout, build_layout
from .render import render_rgb

__all__ = ["CLASS_NAMES", "PhantomSpec", "phantom_layout", "render_phantom", "write_phantom"]


@dataclass(frozen=True)
@schema_defaults("phantom")
class PhantomSpec:
    """What to generate. Sizes in µm; ``mpp`` is the level-0 resolution in µm per pixel. Size, resolution,
    seed and JPEG quality default to the config schema's ``phantom`` block."""

    width_um: float
    height_um: float
    mpp: float
    seed: int
    label: int = 0  # 1 = the rare class is present
    cross_scale: int | None = None  # 0/1: plant the cross-scale label (magflow.phantom.cross); None: do not
    tissue: bool = True  # False: glass only
    write_mpp: bool = True  # False: the slide file carries no mpp at all
    jpeg_quality: int
    label_mpp: float = 2.0  # the grid on which class regions are defined

    def __post_init__(self) -> None:
        checks = [
            (self.width_um > 0 and self.height_um > 0, "width_um and height_um must be positive"),
            (self.mpp > 0 and self.label_mpp > 0, "mpp and label_mpp must be positive"),
            (self.label in (0, 1), "label must be 0 or 1"),
            (self.tissue or self.label == 0, "label=1 needs tissue=True (the rare class lives in tissue)"),
            (self.cross_scale in (None, 0, 1), "cross_scale must be 0, 1 or None"),
            (self.cross_scale is None or self.tissue, "cross_scale needs tissue=True"),
            (self.cross_scale is None or self.label == self.cross_scale,
             "with cross_scale set, label must equal it (large cells in nests, the rare class, are "
             "present iff cross_scale is 1)"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"Invalid phantom spec {self}: {message}.")

    @property
    def shape_px(self) -> tuple[int, int]:
        """Level-0 (rows, cols)."""
        return max(1, round(self.height_um / self.mpp)), max(1, round(self.width_um / self.mpp))


def phantom_layout(spec: PhantomSpec, params: PhantomParams = PhantomParams()) -> PhantomLayout:
    """The labels and architecture alone (cheap: no pixels are drawn)."""
    return build_layout(spec.width_um, spec.height_um, spec.label_mpp, spec.seed, spec.label, spec.tissue, params,
                        spec.cross_scale)


def render_phantom(spec: PhantomSpec, params: PhantomParams = PhantomParams()) -> tuple[np.ndarray, np.ndarray]:
    """(level-0 RGB uint8 rows x cols x 3 at ``spec.mpp``, class labels uint8 at ``spec.label_mpp``)."""
    rgb, layout = _render(spec, params)
    return rgb, layout.labels


def _render(spec: PhantomSpec, params: PhantomParams) -> tuple[np.ndarray, PhantomLayout]:
    layout = phantom_layout(spec, params)
    textures = make_textures(spec.seed, layout)
    nuclei = place_nuclei(spec.seed, layout, textures, spec.width_um, spec.height_um, params)
    return render_rgb(layout, textures, nuclei, spec.shape_px, spec.mpp, spec.seed), layout


def write_phantom(spec: PhantomSpec, slide_path: Path, labels_path: Path, meta_path: Path) -> dict[str, Any]:
    """Render and write the slide, its label PNG and its JSON sidecar; return the sidecar.

    All three are written under temporary names and renamed into place only when all succeeded.
    """
    slide_path, labels_path, meta_path = Path(slide_path), Path(labels_path), Path(meta_path)
    rgb, layout = _render(spec, PhantomParams())
    labels = layout.labels
    levels = pyramid(rgb)
    text = json.dumps(_metadata(spec, layout, levels, slide_path, labels_path), indent=2) + "\n"
    with atomic_path(slide_path) as slide_tmp, atomic_path(labels_path) as labels_tmp, \
            atomic_path(meta_path) as meta_tmp:
        write_aperio_tiff(slide_tmp, levels, spec.jpeg_quality, app_mag=10.0 / spec.mpp,
                          mpp=spec.mpp if spec.write_mpp else None)
        Image.fromarray(labels).save(labels_tmp, format="PNG")
        meta_tmp.write_text(text)
    return json.loads(text)


def _metadata(spec: PhantomSpec, layout: PhantomLayout, levels: list[np.ndarray], slide_path: Path,
              labels_path: Path) -> dict[str, Any]:
    labels = layout.labels
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)).astype(float)
    tissue = counts[1:].sum()
    rows, cols = spec.shape_px
    return {
        "generator": "magflow.phantom.slide",
        "generator_version": GENERATOR_VERSION,
        "magflow_version": __version__,
        "slide": slide_path.name,
        "labels": labels_path.name,
        "seed": spec.seed,
        "slide_label": spec.label,
        "cross_scale": spec.cross_scale,
        "tissue": spec.tissue,
        "mpp": spec.mpp,
        "mpp_written": spec.write_mpp,
        "jpeg_quality": spec.jpeg_quality,
        "slide_size_px": [cols, rows],
        "slide_size_um": [cols * spec.mpp, rows * spec.mpp],
        "level_dimensions": [[level.shape[1], level.shape[0]] for level in levels],
        "label_mpp": spec.label_mpp,
        "label_size_px": [labels.shape[1], labels.shape[0]],
        "label_grid": "labels[r, c] is the class of the square of side label_mpp µm whose top-left "
                      "corner is (c * label_mpp, r * label_mpp) µm from the slide's top-left corner",
        "classes": {str(i): {"name": c.name, "cells": c.cells, "architecture": c.architecture,
                             "description": c.description} for i, c in enumerate(CLASSES)},
        "class_fractions": {name: float(counts[i] / counts.sum()) for i, name in enumerate(CLASS_NAMES)},
        "tissue_fraction": float(tissue / counts.sum()),
        "rare_fraction_of_tissue": float(counts[RARE_CLASS] / tissue) if tissue else 0.0,
        "parameters": asdict(PhantomParams()),
        **({} if spec.cross_scale is None else {"cross_scale_truth": {
            "planted": PLANTED[spec.cross_scale],
            "fractions_of_tissue": scale_statistics(labels, layout.sd_epithelium, layout.sd_tissue),
            "definition": "cells: where nuclei are centred (glass, stroma incl. nest septa, small, large), "
                          "without architecture; architecture: per class, without cell type; joint: class "
                          "cell type x architecture. Only the joint fractions depend on cross_scale.",
        }}),
    }
