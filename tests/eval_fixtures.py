"""A tiny synthetic embeddings file in the documented layout, with label masks, for the evaluation tests.

Six slides, each an 8×8 grid of anchor tiles at 0.25 mpp (cells of 32 px = 8 µm), embedded at four
mpps. The class of a tile is set by the 1.0 mpp cell (4×4 anchors) it lies in, so parents are pure;
features are class means plus noise, a little different at each mpp. A few tiles have no 2.0 mpp view.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from magflow.embed.output import Embeddings, write_embeddings

MPPS = (0.25, 0.5, 1.0, 2.0)
SLIDES = tuple(f"s{i}" for i in range(6))
CLASS_NAMES = ["glass", "tumour", "stroma", "necrosis"]  # index 0 is the masks' background
GRID = 8
CELL_PX = 32
CELL_UM = CELL_PX * 0.25
LABEL_MPP = 4.0  # µm per mask pixel: 2 pixels per anchor cell
DIM = 8
HOLES = 5  # tiles per slide without a 2.0 mpp view


def tile_class(slide: int, col: int, row: int) -> int:
    """1, 2 or 3: constant over each 4×4 block of anchors (one 1.0 mpp cell)."""
    return 1 + (slide + col // 4 + 2 * (row // 4)) % 3


def make_embeddings(path: Path, *, noise: float = 0.6, labelled: bool = True, sampler: dict | None = None,
                    seed: int = 0, model: str = "synthetic") -> Path:
    rng = np.random.default_rng(seed)
    cells = [(s, c, r) for s in range(len(SLIDES)) for r in range(GRID) for c in range(GRID)]
    n = len(cells)
    labels = np.array([tile_class(s, c, r) for s, c, r in cells], np.int64)
    means = rng.normal(size=(4, DIM)) * 2
    features, valid = {}, {}
    for i, m in enumerate(MPPS):
        shift = rng.normal(size=DIM) * 0.3 * i
        features[m] = (means[labels] + shift + rng.normal(size=(n, DIM)) * noise).astype(np.float32)
        valid[m] = np.ones(n, bool)
    holes = np.concatenate([s * GRID * GRID + np.arange(HOLES) for s in range(len(SLIDES))])
    valid[2.0][holes] = False
    features[2.0][holes] = 0
    grid = np.array([(c, r) for _, c, r in cells], np.int64)
    card = {"model": model, "seed": 7, "commit": {"commit": "abc", "dirty": False}}
    if sampler is not None:
        card["sampler"] = sampler
    emb = Embeddings(
        tile_id=np.arange(n, dtype=np.int64), slide=np.array([SLIDES[s] for s, _, _ in cells], dtype=object),
        grid=grid, coords=grid * CELL_PX, label=labels if labelled else np.full(n, -1, np.int64),
        class_names=CLASS_NAMES if labelled else [], features=features, valid=valid,
        mpp_achieved={m: np.where(valid[m], m, np.nan).astype(np.float32) for m in MPPS},
        group_attrs={m: {"target_mpp": m, "source_mpp": m} for m in MPPS},
        attrs={"model": model, "model_card": card, "tileset": "eval", "anchor_mpp": 0.25, "mpps": list(MPPS),
               "cell_px": CELL_PX, "source_mpp": {f"{m:g}": m for m in MPPS}, "precision": "fp32",
               "provenance": {"git": {"commit": "abc", "dirty": False}}})
    write_embeddings(path, emb)
    return path


def write_masks(folder: Path) -> dict[str, str]:
    """One phantom-style label mask per slide (class index per pixel, 0 = glass on a 1-pixel border)."""
    folder.mkdir(parents=True, exist_ok=True)
    side = int(GRID * CELL_UM / LABEL_MPP)
    out = {}
    for s, slide in enumerate(SLIDES):
        cols, rows = np.meshgrid(np.arange(side), np.arange(side))
        per_cell = CELL_UM / LABEL_MPP
        labels = np.vectorize(tile_class)(s, (cols // per_cell).astype(int), (rows // per_cell).astype(int))
        labels[0, :] = 0
        path = folder / f"{slide}.labels.png"
        Image.fromarray(labels.astype(np.uint8)).save(path)
        (folder / f"{slide}.json").write_text(json.dumps({"label_mpp": LABEL_MPP, "classes": CLASS_NAMES}))
        out[slide] = str(path)
    return out


def sheet() -> tuple[dict[str, str], dict[str, str]]:
    """(slide → split, slide → group): four train, one val, one test; two slides share a patient."""
    splits = dict(zip(SLIDES, ("train", "train", "train", "train", "val", "test")))
    groups = {slide: f"p{i}" for i, slide in enumerate(SLIDES)}
    groups["s1"] = "p0"
    return splits, groups
