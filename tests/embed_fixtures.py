"""Tile stores drawn from an analytic image (a function of µm), and a tiny exported ViT, for the embed tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from magflow.preprocess.store import ScaleContent, StoreWriter
from magflow.pretrain.backbone import build_backbone
from magflow.pretrain.export import architecture, export_teacher

SCALES = (0.25, 0.5, 1.0, 2.0)
Field = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x µm, y µm) grids → H×W×3 float in [0, 255]
TINY_VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def smooth_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth, non-periodic colour pattern, resolved at 2 µm/px (shortest period ≈ 37 µm)."""
    red = 128 + 90 * np.sin(2 * np.pi * x / 37 + 0.3) * np.cos(2 * np.pi * y / 53)
    green = 128 + 90 * np.sin(2 * np.pi * (x + 0.7 * y) / 41)
    blue = 128 + 90 * np.cos(2 * np.pi * (x - 1.9 * y) / 67 + 1.1)
    return np.stack([red, green, blue], axis=-1)


def blob_field(cx: float, cy: float, sigma: float) -> Field:
    """A bright Gaussian spot of ``sigma`` µm at (cx, cy) µm on a dark background."""
    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        value = 10 + 240 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))
        return np.repeat(value[..., None], 3, axis=-1)
    return field


def render(field: Field, x0_um: float, y0_um: float, size: int, mpp: float) -> np.ndarray:
    """size×size px at ``mpp`` whose top-left corner is (x0, y0) µm, each pixel sampled at its centre."""
    axis = (np.arange(size) + 0.5) * mpp
    y, x = np.meshgrid(y0_um + axis, x0_um + axis, indexing="ij")
    return np.clip(np.rint(field(x, y)), 0, 255).astype(np.uint8)


def write_analytic_store(path: Path, field: Field, *, size_um: float = 128.0, cell_px: int = 32,
                         source_px: int = 72, slide_id: str = "s", scales: tuple[float, ...] = SCALES,
                         achieved: float = 1.0, drop: dict[float, list[tuple[int, int]]] | None = None,
                         slide_mpp: float = 0.25) -> Path:
    """A store as extraction writes it: every cell of a size_um square slide at every scale, each source
    patch S px centred on its cell; ``achieved`` scales every scale's achieved mpp; ``drop`` removes cells."""
    drop = drop or {}
    contents, patches = [], []
    margin = (source_px - cell_px) // 2
    for target in scales:
        mpp = target * achieved
        cells = int(round(size_um / (cell_px * mpp)))
        grid = np.array([(c, r) for r in range(cells) for c in range(cells) if (c, r) not in drop.get(target, [])],
                        np.int64).reshape(-1, 2)
        coords = np.rint(grid * cell_px * mpp / slide_mpp)
        attrs = {"target_mpp": target, "mpp": mpp, "cell_px": cell_px, "source_px": source_px,
                 "grid_cols": cells, "grid_rows": cells}
        contents.append(ScaleContent(attrs, grid, coords, np.ones(len(grid))))
        patches.append([render(field, (c * cell_px - margin) * mpp, (r * cell_px - margin) * mpp, source_px, mpp)
                        for c, r in grid])
    root = {"slide_id": slide_id, "tileset": "eval", "mpp": slide_mpp,
            "params": {"scales": list(scales), "cell_px": cell_px, "source_px": source_px}}
    with StoreWriter(path, root, contents, source_px) as writer:
        for scale, images in enumerate(patches):
            for row, image in enumerate(images):
                writer.write(scale, row, image)
    return path


def export_tiny_vit(out_dir: Path, img_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """A tiny random ViT exported as a run's teacher (safetensors + model card)."""
    import torch

    torch.manual_seed(seed)
    backbone = build_backbone("vit_small_patch16_224", img_size=img_size, patch_size=patch_size, **TINY_VIT)
    card = {"architecture": architecture(backbone, "vit_small_patch16_224", TINY_VIT, img_size), "strategy": "test"}
    export_teacher(backbone, out_dir, card)
    return out_dir


def write_label_mask(path: Path, labels: np.ndarray, label_mpp: float, names: list[str]) -> Path:
    """A label PNG and its phantom-style sidecar (``X.labels.png`` + ``X.json``)."""
    from PIL import Image

    Image.fromarray(labels.astype(np.uint8)).save(path)
    sidecar = path.with_name(path.name.replace(".labels.png", ".json"))
    sidecar.write_text(json.dumps({"label_mpp": label_mpp, "classes": {str(i): {"name": n} for i, n in
                                                                       enumerate(names)}}))
    return path
