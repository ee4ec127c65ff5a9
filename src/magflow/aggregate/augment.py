"""Dihedral augmentation of regions (rotations by 90° and flips), the same for every scale.

Tile embeddings cannot be rotated, so a region is rotated by moving its tokens: each token is the
box [p, p + cell) in finest-scale cells of a region of side T, and the box is mapped as a whole
(flip x: p_x → T − cell − p_x; quarter turn: (p_x, p_y) → (T − cell − p_y, p_x)). This is the same as
rotating each scale's grid in its own cells, so a tile and the finer tiles inside it stay nested.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from magflow.aggregate.batch import RegionBatch


def dihedral_positions(position: Tensor, cell: Tensor, side: int, k: Tensor) -> Tensor:
    """Positions (B×N×2) after dihedral element ``k`` (B, in 0..7: k % 4 quarter turns after a flip if k ≥ 4)."""
    k = k.view(-1, 1)
    x, y = position[..., 0], position[..., 1]
    far = side - cell
    x = torch.where(k >= 4, far - x, x)
    for turn in range(3):
        rotate = (k % 4) > turn
        x, y = torch.where(rotate, far - y, x), torch.where(rotate, x, y)
    return torch.stack([x, y], -1)


def random_dihedral(batch: RegionBatch, generator: torch.Generator) -> RegionBatch:
    """Each region of the batch under its own uniformly drawn dihedral element."""
    k = torch.randint(0, 8, (len(batch),), generator=generator).to(batch.position.device)
    return replace(batch, position=dihedral_positions(batch.position, batch.cell, batch.side, k))
