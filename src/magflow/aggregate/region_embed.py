"""The per-slide regions step: embed a slide's tile store with a frozen encoder and write its region file.

This is what the workflow's regions rule calls (one job per slide and encoder). The tile set must hold
every aggregate scale with no per-scale caps (see ``tile_embed.check_region_tileset``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from magflow import provenance
from magflow.aggregate.regions import write_regions
from magflow.aggregate.tile_embed import embed_store
from magflow.embed.encoder import Encoder, ExternalModel, load_encoder
from magflow.embed.embed import pick_device
from magflow.errors import ConfigError
from magflow.preprocess.store import TileStore

log = logging.getLogger(__name__)

DEFAULT_SCALES = (2.0, 1.0, 0.5)  # 5×, 10×, 20×


def build_slide_regions(store_path: str | os.PathLike[str], out: str | os.PathLike[str],
                        model: str | os.PathLike[str] | ExternalModel | Encoder, *, name: str | None = None,
                        t: int = 3, scales: Sequence[float] = DEFAULT_SCALES, batch_size: int = 64,
                        mean_patch: bool = False, device: str | torch.device | None = None, progress: bool = True,
                        config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Embed every tile of ``scales`` in the store and write the slide's region file ``out``; return counts.

    ``model`` is a run's model directory, an :class:`ExternalModel`, or an already loaded :class:`Encoder`;
    ``mean_patch`` is ``embed.mean_patch`` (features [CLS, mean patch token], as the evaluation embeddings).
    """
    if t < 1 or len(scales) < 1:
        raise ConfigError(f"aggregate: t must be >= 1 (got {t}) and scales non-empty (got {list(scales)})")
    device = pick_device(device)
    encoder = model if isinstance(model, Encoder) else load_encoder(model, mean_patch=mean_patch, name=name)
    encoder = encoder.to(device)
    precision = "bf16-autocast" if device.type == "cuda" else "fp32"
    with TileStore(store_path) as store:
        slide_id = str(store.attrs.get("slide_id", store.path.stem))
        embedded = embed_store(store, encoder, list(scales), batch_size=batch_size, device=device, progress=progress)
        attrs = {"tileset": str(store.attrs.get("tileset", "")), "model": encoder.name, "model_card": encoder.card,
                 "features": encoder.features, "store": str(store_path), "precision": precision,
                 "empty_reason": str(store.attrs.get("empty_reason", "")),
                 "provenance": provenance.collect(config=config, precision=precision, store=str(store_path))}
        counts = write_regions(out, slide_id, embedded, t, float(store.attrs["mpp"]), attrs)
    log.info("%s: %d regions of %d tokens, %d tokens missing (background)", slide_id, counts["n_regions"],
             counts["n_tokens"], counts["missing_tokens"])
    return counts
