"""Region embeddings of a slide: every listed region of its region file through a frozen mixing encoder.

These are the instances of the slide-level AB-MIL bags: one vector per region, the concatenation of
the encoder's class tokens (n_cls · width), with no augmentation and no masking.
"""

from __future__ import annotations

import numpy as np
import torch

from magflow.aggregate.batch import RegionBatch
from magflow.aggregate.mixer import MixingEncoder
from magflow.aggregate.regions import SlideRegions


def encode_regions(encoder: MixingEncoder, regions: SlideRegions, *, batch_size: int = 256,
                   device: torch.device | str | None = None) -> np.ndarray:
    """R×(n_cls·width) float32: the concatenated class tokens of each region, in ``regions.regions`` order."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    encoder = encoder.to(device).eval()
    out = np.zeros((len(regions), encoder.config.n_cls * encoder.config.width), np.float32)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    with torch.inference_mode(), autocast:
        for start in range(0, len(regions), batch_size):
            cut = regions.cut(regions.regions[start:start + batch_size])
            batch = RegionBatch.from_tokens(cut, regions.layout.side).to(device)
            cls = encoder(batch.tokens, batch.scale_id, batch.position, batch.valid).cls
            out[start:start + len(cls)] = cls.flatten(1).float().cpu().numpy()
    return out
