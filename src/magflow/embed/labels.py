"""Class labels for the anchor tiles, where they are known; −1 elsewhere.

Two kinds of label source, given per slide (a path) or as one CSV for many slides:

- **A label mask**: an image of class indices (uint8 PNG) at a stated mpp, with a JSON sidecar beside
  it, as a phantom writes (``{id}.labels.png`` + ``{id}.json``). The sidecar gives ``label_mpp``
  (µm per mask pixel; pixel [r, c] covers the square of that side whose top-left corner is
  (c·label_mpp, r·label_mpp) µm from the slide's top-left corner), ``classes`` (a list of names, or
  index → name, or index → {"name": ...}) and optionally ``background`` (default 0). A tile's label
  is the majority class over its anchor cell's footprint, each mask pixel weighted by the area it
  shares with the cell (ties go to the smaller index); a tile whose majority is the background, or
  that lies outside the mask, stays −1. Label indices are the mask's own class indices.
- **A tile-label CSV** (comma-separated; ``.tsv`` tab-separated) with a ``label`` column (a class
  name) and either ``x``, ``y`` (level-0 top-left of the anchor cell, CLAM style, as the store's
  ``coords``; matched to within 1 px) or ``col``, ``row`` (the anchor grid index). A ``slide_id``
  column is needed when the file covers several slides. A CSV label wins over a mask label of the
  same tile; two different CSV labels for one tile are an error.

``class_names`` lists the mask classes first (every mask must agree on them), then any other CSV
names in natural order (numbers numerically); a tile's label indexes that list.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from magflow.errors import ConfigError
from magflow.sheet_lines import NumberedRows

log = logging.getLogger(__name__)
CSV_SUFFIXES = (".csv", ".tsv")
COORD_TOLERANCE_PX = 1  # level-0 rounding of the stored coords (CLAM-style whole pixels)


@dataclass(frozen=True)
class LabelMask:
    labels: np.ndarray      # rows × cols class indices
    mpp: float              # µm per mask pixel
    class_names: list[str]
    background: int = 0


@dataclass(frozen=True)
class TileTable:
    """What labelling needs to know about each anchor tile."""

    slide: np.ndarray      # (N,) slide ids
    grid: np.ndarray       # (N, 2) anchor grid col, row
    coords: np.ndarray     # (N, 2) level-0 top-left x, y
    boxes_um: np.ndarray   # (N, 4) anchor cell x0, y0, x1, y1 in µm from the slide's top-left corner


def sidecar_path(mask_path: str | os.PathLike[str]) -> Path:
    """``X.labels.png`` → ``X.json`` (the phantom's naming); any other ``X.png`` → ``X.json``."""
    path = Path(mask_path)
    if path.name.endswith(".labels.png"):
        return path.with_name(path.name[: -len(".labels.png")] + ".json")
    return path.with_suffix(".json")


def _class_names(classes: object, where: Path) -> list[str]:
    if isinstance(classes, list):
        return [str(c) for c in classes]
    if isinstance(classes, dict):
        indexed = {int(k): (v["name"] if isinstance(v, dict) else v) for k, v in classes.items()}
        if sorted(indexed) != list(range(len(indexed))):
            raise ConfigError(f"{where}: `classes` must be indexed 0..K−1, got {sorted(indexed)}")
        return [str(indexed[i]) for i in range(len(indexed))]
    raise ConfigError(f"{where}: `classes` must be a list of names or a mapping index → name")


def read_label_mask(path: str | os.PathLike[str], sidecar: str | os.PathLike[str] | None = None) -> LabelMask:
    """A class-index image and its sidecar (see the module docstring)."""
    path = Path(path)
    meta_path = Path(sidecar) if sidecar is not None else sidecar_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise ConfigError(f"label mask {path}: needs the image and its JSON sidecar {meta_path} "
                          "(with label_mpp and classes); one of them does not exist")
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta.get("label_mpp"), (int, float)) or meta["label_mpp"] <= 0 or "classes" not in meta:
        raise ConfigError(f"{meta_path}: a label mask sidecar needs `label_mpp` (µm per mask pixel, > 0) "
                          "and `classes`")
    names = _class_names(meta["classes"], meta_path)
    labels = np.asarray(Image.open(path))
    if labels.ndim != 2:
        raise ConfigError(f"{path}: a label mask is a single-channel image of class indices, got shape {labels.shape}")
    if labels.size and int(labels.max()) >= len(names):
        raise ConfigError(f"{path}: class index {int(labels.max())} has no name in {meta_path} ({len(names)} classes)")
    return LabelMask(labels, float(meta["label_mpp"]), names, int(meta.get("background", 0)))


def _overlaps(start: float, stop: float, size: int) -> tuple[int, np.ndarray]:
    """First mask pixel touched by [start, stop) (in mask pixels) and each touched pixel's share."""
    first, last = max(0, math.floor(start)), min(size, math.ceil(stop))
    if last <= first:
        return first, np.zeros(0)
    edges = np.arange(first, last + 1, dtype=np.float64)
    return first, np.minimum(edges[1:], stop) - np.maximum(edges[:-1], start)


def mask_labels(mask: LabelMask, boxes_um: np.ndarray) -> np.ndarray:
    """The area-weighted majority class of each box (x0, y0, x1, y1 in µm); −1 for background or outside."""
    out = np.full(len(boxes_um), -1, np.int64)
    rows, cols = mask.labels.shape
    for n, (x0, y0, x1, y1) in enumerate(np.asarray(boxes_um, np.float64) / mask.mpp):
        c0, wx = _overlaps(x0, x1, cols)
        r0, wy = _overlaps(y0, y1, rows)
        if not wx.size or not wy.size:
            continue
        window = mask.labels[r0:r0 + len(wy), c0:c0 + len(wx)]
        votes = np.bincount(window.ravel(), weights=np.outer(wy, wx).ravel(), minlength=len(mask.class_names))
        outside = (x1 - x0) * (y1 - y0) - votes.sum()  # area beyond the mask counts as background
        votes[mask.background] += max(0.0, outside)
        winner = int(np.argmax(votes))
        out[n] = -1 if winner == mask.background else winner
    return out


def _natural(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if re.fullmatch(r"\d+", name) else (1, name)


def read_tile_label_csv(path: str | os.PathLike[str], slide_id: str | None = None) -> list[dict[str, object]]:
    """Rows of a tile-label CSV as dicts with slide_id, label and x, y or col, row (ints)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tile-label CSV {path} does not exist")
    with path.open(newline="") as handle:
        reader = NumberedRows(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        columns = set(reader.fieldnames)
        keys = ("x", "y") if {"x", "y"} <= columns else ("col", "row") if {"col", "row"} <= columns else None
        if "label" not in columns or keys is None or ("slide_id" not in columns and slide_id is None):
            raise ConfigError(f"{path}: a tile-label CSV needs columns label and x, y (level-0 top-left) or col, row "
                              f"(anchor grid){'' if slide_id else ', and slide_id'}; it has {sorted(columns)}")
        out = []
        for line, row in reader:
            try:
                where = {key: int(float(row[key])) for key in keys}
            except (TypeError, ValueError):
                raise ConfigError(f"{path}, line {line}: {keys} must be whole numbers, got "
                                  f"{[row.get(k) for k in keys]}") from None
            label = (row.get("label") or "").strip()
            if not label:
                raise ConfigError(f"{path}, line {line}: empty label")
            out.append({"slide_id": (row.get("slide_id") or slide_id or "").strip(), "label": label,
                        "line": line, **where})
    return out


def _match_csv(rows: list[dict[str, object]], tiles: TileTable, source: Path) -> dict[int, str]:
    """Tile index → CSV label name."""
    by_slide: dict[str, np.ndarray] = {}
    found: dict[int, str] = {}
    unmatched = 0
    for row in rows:
        slide = str(row["slide_id"])
        if slide not in by_slide:
            by_slide[slide] = np.flatnonzero(tiles.slide == slide)
        candidates = by_slide[slide]
        if "x" in row:
            near = np.abs(tiles.coords[candidates] - [row["x"], row["y"]]).max(axis=1) <= COORD_TOLERANCE_PX
        else:
            near = (tiles.grid[candidates] == [row["col"], row["row"]]).all(axis=1)
        hits = candidates[near]
        if not len(hits):
            unmatched += 1
            continue
        tile, label = int(hits[0]), str(row["label"])
        if found.get(tile, label) != label:
            raise ConfigError(f"{source}, line {row['line']}: tile {slide} {tiles.grid[tile].tolist()} is labelled "
                              f"both '{found[tile]}' and '{label}'")
        found[tile] = label
    if unmatched:
        log.info("%s: %d of %d rows match no tile of the tile set (not in the eval set, or another slide)",
                 source, unmatched, len(rows))
    return found


def tile_labels(tiles: TileTable, sources: Mapping[str, str | os.PathLike[str] | None] | None = None,
                csv_path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(N labels, class names): masks and per-slide CSVs from ``sources`` (slide id → path), then ``csv_path``."""
    sources = {k: v for k, v in (sources or {}).items() if v}
    labels = np.full(len(tiles.slide), -1, np.int64)
    names: list[str] | None = None
    csv_labels: dict[int, str] = {}
    for slide, source in sources.items():
        source = Path(source)
        rows = np.flatnonzero(tiles.slide == slide)
        if source.suffix.lower() in CSV_SUFFIXES:
            csv_labels.update(_match_csv(read_tile_label_csv(source, slide), tiles, source))
            continue
        mask = read_label_mask(source)
        if names is not None and mask.class_names != names:
            raise ConfigError(f"{source}: its classes {mask.class_names} differ from another slide's {names}; "
                              "every label mask of a tile set must use the same class list")
        names = mask.class_names
        labels[rows] = mask_labels(mask, tiles.boxes_um[rows])
    if csv_path:
        csv_labels.update(_match_csv(read_tile_label_csv(csv_path), tiles, Path(csv_path)))
    names = list(names or [])
    names += sorted({name for name in csv_labels.values() if name not in names}, key=_natural)
    index = {name: i for i, name in enumerate(names)}
    for tile, name in csv_labels.items():
        labels[tile] = index[name]
    return labels, names
