"""The mad_embed step: every slide's ``mad`` tile store embedded on its own grids by one model.

Every kept tile of every scale is shown to the encoder at its own scale, as the store cut it (the
cell_px centre of its source patch, no resizing, as :func:`magflow.aggregate.tile_embed.embed_store`
does), and written with :func:`magflow.evaluate.mad_tiles.write_mad_tiles` (results/mad/{model}/tiles.h5).
A tile set that caps tiles per scale is embedded as it is, with a warning and ``max_tiles_per_scale``
recorded: its parents miss children, so the hierarchy scores few of them.

- Tile label: the area-weighted majority class of the mask pixels under the tile's square
  (:func:`magflow.embed.labels.mask_labels`; the square is grid × cell µm from the slide's top-left
  corner, as the grids are laid), −1 where the majority is background or the slide has no label mask.
  Only label masks label these tiles: a tile-label CSV names tiles of one grid, so a slide annotated
  by a CSV keeps −1 here (recorded in ``unlabelled_slides``).
- Splits: the slide sheet's ``split`` column (train / val / test), which every sheet row has. The MAD
  paper evaluates on one fixed slide split, so no seeded re-splitting is done here; a slide without a
  split is refused, naming it.
- A slide with no tile at a scale (e.g. a 20× scan has no 40× scale: magflow never upsamples) adds no
  tile there; the scales each slide lacks are recorded (``missing_scales``).

The workflow passes the stores of the slides that have a label mask only: every MAD score reads labelled
tiles, so an unlabelled slide would be embedded for nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from magflow import provenance
from magflow.aggregate.tile_embed import embed_scale
from magflow.embed.control import InitControl
from magflow.embed.encoder import Encoder, ExternalModel, load_encoder
from magflow.embed.labels import CSV_SUFFIXES, LabelMask, mask_labels, read_label_mask
from magflow.embed.embed import pick_device
from magflow.errors import ConfigError
from magflow.evaluate.mad_tiles import MadScale, MadTiles, write_mad_tiles
from magflow.preprocess.store import TileStore
from magflow.sheet import SPLITS

log = logging.getLogger(__name__)


def check_splits(slides: Sequence[str], splits: Mapping[str, str | None]) -> dict[str, str]:
    """slide → train/val/test from the sheet; refuses a slide without one."""
    bad = [s for s in slides if splits.get(s) not in SPLITS]
    if bad:
        raise ConfigError(f"the MAD evaluation uses the slide sheet's split column, and slide(s) {', '.join(bad)} "
                          f"have none of {', '.join(SPLITS)}; give every slide a split")
    return {s: str(splits[s]) for s in slides}


def _mask(slide: str, source: str | os.PathLike[str] | None, names: list[str] | None) -> LabelMask | None:
    if not source or str(source).lower().endswith(CSV_SUFFIXES):
        return None
    mask = read_label_mask(source)
    if names is not None and mask.class_names != names:
        raise ConfigError(f"slide {slide}: label mask {source} names the classes {mask.class_names}, another slide's "
                          f"mask {names}; every label mask must use the same class list")
    return mask


def tile_squares_um(grid: np.ndarray, cell_um: float) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 in µm of the grid cells (col, row) of side ``cell_um``."""
    start = np.asarray(grid, np.float64).reshape(-1, 2) * cell_um
    return np.concatenate([start, start + cell_um], axis=1)


def embed_mad_tiles(stores: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                    model: str | os.PathLike[str] | ExternalModel | InitControl | Encoder, *,
                    splits: Mapping[str, str | None], labels: Mapping[str, str | os.PathLike[str] | None] | None = None,
                    name: str | None = None, batch_size: int = 64, mean_patch: bool = False,
                    device: str | torch.device | None = None, progress: bool = True, config: Mapping[str, Any] | None = None) -> MadTiles:
    """Embed every tile of every scale of ``stores`` (one per slide) and write ``out``; returns what was written.

    ``splits``: slide → train/val/test (the sheet's); ``labels``: slide → its label mask (PNG with its JSON
    sidecar; None or a CSV: unlabelled here); ``mean_patch`` is ``embed.mean_patch``: a run's (or control's)
    features are then [CLS, mean patch token], as its evaluation embeddings are.
    """
    if not stores:
        raise ConfigError("mad_embed: no tile store given")
    if batch_size < 1:
        raise ConfigError(f"embed.batch_size = {batch_size}: must be at least 1")
    ids, total = [], 0
    for path in stores:
        with TileStore(path) as store:
            ids.append(str(store.attrs.get("slide_id", Path(path).stem)))
            total += len(store)
    slide_splits = check_splits(ids, splits)  # before any tile is embedded
    device = pick_device(device)
    encoder = model if isinstance(model, Encoder) else load_encoder(model, mean_patch=mean_patch, name=name)
    encoder = encoder.to(device)
    precision = "bf16-autocast" if device.type == "cuda" else "fp32"
    labels = dict(labels or {})
    parts: dict[float, list[dict[str, Any]]] = {}
    names: list[str] | None = None
    missing, unlabelled, achieved, tileset, capped = {}, [], {}, "", None
    bar = tqdm(total=total, desc=f"mad tiles [{encoder.name}]", unit="tile", disable=not progress, mininterval=1.0)
    for slide, path in zip(ids, stores):
        with TileStore(path) as store:
            params = store.json_attr("params") if "params" in store.attrs else {}
            tileset = tileset or str(params.get("name", store.attrs.get("tileset", "")))
            wanted = sorted((float(m) for m in params.get("scales", store.scales)), reverse=True)
            if params.get("max_tiles_per_scale") is not None:
                capped = params["max_tiles_per_scale"]
            missing[slide] = [m for m in wanted if m not in store.scales]
            mask = _mask(slide, labels.get(slide), names)
            if mask is None:
                unlabelled.append(slide)
            else:
                names = mask.class_names
            for mpp in (m for m in wanted if m in store.scales):
                group = store.group(mpp)
                cell_um = float(group.attrs["mpp"]) * int(group.attrs["cell_px"])
                grid = group["grid"][...].astype(np.int64).reshape(-1, 2)
                tile_labels = (mask_labels(mask, tile_squares_um(grid, cell_um)) if mask is not None
                               else np.full(len(grid), -1, np.int64))
                parts.setdefault(mpp, []).append(
                    {"slide": slide, "grid": grid, "labels": tile_labels, "mpp": float(group.attrs["mpp"]),
                     "cell_um": cell_um, "features": embed_scale(store, mpp, encoder, batch_size, device, bar)})
                achieved.setdefault(f"{mpp:g}", {})[slide] = float(group.attrs["mpp"])
    bar.close()
    if capped is not None:
        log.warning("tile set '%s' caps tiles per scale (max_tiles_per_scale %s): parents miss children, so the "
                    "hierarchy scores few parents; use max_tiles_per_scale: null for the MAD evaluation",
                    tileset, capped)
    if not parts:
        raise ConfigError(f"mad_embed: the stores of {', '.join(ids)} hold no tile at any scale")
    dim = encoder.feature_dim
    scales = {}
    for mpp, chunks in parts.items():
        n = [len(c["grid"]) for c in chunks]
        weights = np.asarray(n, np.float64) if sum(n) else None  # achieved mpp: the mean over tiles
        scales[mpp] = MadScale(
            target_mpp=mpp, mpp=float(np.average([c["mpp"] for c in chunks], weights=weights)),
            cell_um=float(np.average([c["cell_um"] for c in chunks], weights=weights)),
            slides=np.repeat(np.asarray([c["slide"] for c in chunks], dtype=object), n).astype(str),
            grid=np.concatenate([c["grid"] for c in chunks]).reshape(-1, 2).astype(np.int64),
            labels=np.concatenate([c["labels"] for c in chunks]).astype(np.int64),
            features=np.concatenate([c["features"] for c in chunks]).reshape(-1, dim).astype(np.float32))
    attrs = {"model": encoder.name, "model_card": encoder.card, "features": encoder.features,
             "feature_dim": dim, "precision": precision, "device": str(device), "tileset": tileset,
             "stores": [str(p) for p in stores], "achieved_mpp": achieved, "missing_scales": missing,
             "unlabelled_slides": unlabelled, "max_tiles_per_scale": capped,
             "labels": "majority mask class under the tile's square; -1: background, no mask, or a CSV-annotated slide",
             "splits_from": "the slide sheet's split column",
             "provenance": provenance.collect(config=config, precision=precision)}
    tiles = MadTiles(scales, list(names or []), slide_splits, attrs)
    write_mad_tiles(out, tiles)
    for mpp in tiles.mpps:
        s = tiles.scales[mpp]
        log.info("%g mpp: %d tiles over %d slides, %d labelled", mpp, len(s.slides), len(set(s.slides)),
                 int((s.labels >= 0).sum()))
    return tiles
