"""A batch of regions as tensors: what the mixer, MEM and CMEM take."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from magflow.aggregate.regions import RegionTokens


@dataclass(frozen=True)
class RegionBatch:
    """B regions of N tokens; ``position`` and ``cell`` are in finest-scale cells (see ``regions``)."""

    tokens: Tensor    # B×N×D float32, zero where not valid
    valid: Tensor     # B×N bool: a tile exists (False = background, never attended)
    scale_id: Tensor  # B×N long, 0 = coarsest
    position: Tensor  # B×N×2 long, top-left (x, y) of the token's cell
    cell: Tensor      # B×N long, the token's side
    side: int         # the region's side

    @classmethod
    def from_tokens(cls, regions: RegionTokens, side: int) -> RegionBatch:
        batch = regions.tokens.shape[0]

        def tile(values: np.ndarray) -> Tensor:
            return torch.from_numpy(np.repeat(values[None], batch, axis=0)).long()

        return cls(torch.from_numpy(regions.tokens), torch.from_numpy(regions.valid), tile(regions.scale_id),
                   tile(regions.position), tile(regions.cell), side)

    def to(self, device: torch.device | str) -> RegionBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True)
                                for f in fields(self) if f.name != "side"})

    def pin_memory(self) -> RegionBatch:
        """Called by a DataLoader with ``pin_memory=True``, so host-to-device copies can overlap compute."""
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self) if f.name != "side"})

    def __len__(self) -> int:
        return self.tokens.shape[0]
