"""Tiny train tile stores written with the real store writer, and a tiny DINOv2 config that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from magflow.preprocess.store import ScaleContent, StoreWriter

SCALES = (0.25, 0.5, 1.0, 2.0)

# A 2-block, 32-wide ViT on 64 px globals / 32 px locals (128 px sources), small heads, short warmups.
TINY = {
    "arch_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "global_size": 64, "local_size": 32,
    "n_local_crops": 2, "prototypes": 64, "head_hidden_dim": 64, "head_bottleneck_dim": 16, "batch_size": 4,
    "warmup_iters": 0, "teacher_temp_warmup_iters": 2, "freeze_last_layer_iters": 1, "base_lr": 0.5,
    "momentum": 0.9, "num_workers": 0, "checkpoint_every": 1000, "log_every": 2,
}


def texture(size: int, seed: int) -> np.ndarray:
    """A smooth colour texture of size×size px, distinct for every seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 230, (size // 16 + 2, size // 16 + 2, 3), dtype=np.uint8)
    big = Image.fromarray(coarse).resize((size + 32, size + 32), Image.Resampling.BICUBIC)
    return np.asarray(big)[:size, :size]


def write_store(path: Path, slide_id: str, tiles: int = 3, source_px: int = 128, cell_px: int = 64,
                achieved: dict[float, float] | None = None, seed: int = 0) -> Path:
    """A store with ``tiles`` tiles at each standard scale; ``achieved`` maps a scale to an off-nominal mpp."""
    achieved = achieved or {}
    contents = [ScaleContent({"target_mpp": mpp, "mpp": achieved.get(mpp, mpp), "cell_px": cell_px,
                              "source_px": source_px, "grid_cols": tiles, "grid_rows": 1},
                             np.array([[i, 0] for i in range(tiles)]), np.zeros((tiles, 2)), np.ones(tiles))
                for mpp in SCALES]
    with StoreWriter(path, {"slide_id": slide_id, "tileset": "train"}, contents, source_px) as writer:
        for scale, _ in enumerate(SCALES):
            for row in range(tiles):
                writer.write(scale, row, texture(source_px, seed * 1000 + scale * 100 + row))
    return path
