"""Embed every stored tile of a slide's tile store, each at its own scale, with a frozen encoder.

Region aggregation needs the embedding of every tissue tile of every scale (a region is a complete
t×t block and all tiles aligned with it), unlike ``magflow.embed.embed``, which embeds the anchor tiles
of the eval set at many mpps. A tile is the cell_px × cell_px centre of its stored source patch, shown
to the encoder as it is (no resizing: the store already made it at the scale's achieved mpp).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from magflow.embed.encoder import Encoder
from magflow.errors import ConfigError
from magflow.preprocess.store import TileStore

log = logging.getLogger(__name__)


@dataclass
class ScaleEmbeddings:
    """The embeddings of one scale's kept tiles, with where they lie."""

    target_mpp: float
    mpp: float                  # achieved
    factor: int                 # cells of this scale per coarsest cell, along each axis
    grid_shape: tuple[int, int]  # rows, cols of this scale's full grid
    cell_um: float
    grid: np.ndarray            # N×2 (col, row)
    coords: np.ndarray          # N×2 level-0 top-left (x, y)
    features: np.ndarray        # N×D float32


def check_region_tileset(store: TileStore, scales: list[float]) -> None:
    """Refuse a store that cannot give complete regions: a missing scale, or per-scale tile caps."""
    missing = [m for m in scales if m not in store.scales]
    if missing:
        raise ConfigError(f"{store.path}: the tile store has no scale(s) {missing} (stored: {store.scales}, "
                          f"{store.attrs.get('skipped_scales', '')}); the region tile set must hold every "
                          "aggregate scale; fix the scales of the tile set named by `aggregate.tileset`")
    params = store.json_attr("params") if "params" in store.attrs else {}
    if params.get("max_tiles_per_scale") is not None:
        raise ConfigError(f"{store.path}: tile set '{params.get('name', '')}' caps tiles per scale "
                          f"(max_tiles_per_scale {params['max_tiles_per_scale']}), so regions would miss tissue "
                          "tiles; use a tile set with max_tiles_per_scale: null for aggregation")


def centre_views(patches: np.ndarray, cell_px: int) -> torch.Tensor:
    """B×S×S×3 uint8 source patches → B×3×C×C float views in [0, 1]: the centred cell, not resized."""
    offset = (patches.shape[1] - cell_px) // 2
    cells = patches[:, offset:offset + cell_px, offset:offset + cell_px]
    return torch.from_numpy(np.ascontiguousarray(cells)).permute(0, 3, 1, 2).float().div_(255)


def embed_scale(store: TileStore, mpp: float, encoder: Encoder, batch_size: int, device: torch.device,
                bar: tqdm | None = None) -> np.ndarray:
    """(N, D) float32 features of one scale's kept tiles, in store order, each at its own scale (bf16
    autocast on CUDA, float32 otherwise); ``bar`` advances by the tiles done. Callers check ``batch_size``
    against their own config key."""
    images, cell_px = store.images(mpp), int(store.group(mpp).attrs["cell_px"])
    features = np.zeros((len(images), encoder.feature_dim), np.float32)
    autocast: Any = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    with torch.inference_mode(), autocast:
        for start in range(0, len(images), batch_size):
            views = centre_views(images[start:start + batch_size], cell_px).to(device, non_blocking=True)
            features[start:start + len(views)] = encoder(views).float().cpu().numpy()
            if bar is not None:
                bar.update(len(views))
    return features


def embed_store(store: TileStore, encoder: Encoder, scales: list[float], *, batch_size: int = 64,
                device: torch.device | None = None, progress: bool = True) -> list[ScaleEmbeddings]:
    """Every kept tile of ``scales`` (target mpps) embedded; one entry per scale, coarsest first."""
    if batch_size < 1:
        raise ConfigError(f"aggregate.batch_size = {batch_size}: must be at least 1")
    order = sorted({float(m) for m in scales}, reverse=True)
    check_region_tileset(store, order)
    device = device or next(encoder.parameters()).device
    total = sum(len(store.group(m)["grid"]) for m in order)
    slide = str(store.attrs.get("slide_id", store.path.stem))
    bar = tqdm(total=total, desc=f"{slide} [{encoder.name}]", unit="tile", disable=not progress, mininterval=1.0)
    out: list[ScaleEmbeddings] = []
    for mpp in order:
        group = store.group(mpp)
        features = embed_scale(store, mpp, encoder, batch_size, device, bar)
        out.append(ScaleEmbeddings(
            target_mpp=mpp, mpp=float(group.attrs["mpp"]), factor=store.factor(order[0], mpp),
            grid_shape=(int(group.attrs["grid_rows"]), int(group.attrs["grid_cols"])),
            cell_um=float(group.attrs["mpp"]) * int(group.attrs["cell_px"]), grid=group["grid"][...].astype(np.int64),
            coords=group["coords"][...].astype(np.int64), features=features))
        log.info("%s: %g mpp: %d tiles embedded", slide, mpp, len(features))
    bar.close()
    return out
