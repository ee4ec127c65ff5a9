"""iBOT/BEiT block masking: unions of random rectangles on the patch grid, and the batch-level masks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Block = tuple[int, int, int, int]  # top, left, height, width in patches


def sample_blocks(height: int, width: int, num_masked: int, rng: np.random.Generator, *,
                  min_block: int = 4, max_block: int | None = None, min_aspect: float = 0.3,
                  max_tries: int = 10) -> list[Block]:
    """Random rectangles on a height×width grid whose union covers at most ``num_masked`` patches.

    Each rectangle has a target area uniform in [min_block, min(remaining, max_block)] and an aspect
    ratio log-uniform in [min_aspect, 1/min_aspect]; one that adds no new patch or overshoots the count
    is redrawn, up to ``max_tries`` times, after which masking stops (so the count may fall short).
    """
    max_block = num_masked if max_block is None else max_block
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    covered = np.zeros((height, width), dtype=bool)
    count, blocks = 0, []
    while count < num_masked:
        budget = min(num_masked - count, max_block)
        for _ in range(max_tries):
            area = min_block + (budget - min_block) * rng.random()  # budget < min_block near the end
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (0 < h < height and 0 < w < width):
                continue
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            new = h * w - int(covered[top:top + h, left:left + w].sum())
            if 0 < new <= budget:
                covered[top:top + h, left:left + w] = True
                count += new
                blocks.append((top, left, h, w))
                break
        else:
            break
    return blocks


def block_mask(height: int, width: int, num_masked: int, rng: np.random.Generator, **kwargs: Any) -> np.ndarray:
    """A height×width bool mask: the union of ``sample_blocks(...)`` (keyword arguments passed on)."""
    mask = np.zeros((height, width), dtype=bool)
    for top, left, h, w in sample_blocks(height, width, num_masked, rng, **kwargs):
        mask[top:top + h, left:left + w] = True
    return mask


@dataclass
class MaskBatch:
    masks: torch.Tensor    # n_images×N bool, row-major patch order
    indices: torch.Tensor  # M flat indices of the masked tokens into masks.flatten()
    weights: torch.Tensor  # M float: 1 / (masked tokens in the token's image)

    @property
    def n_masked(self) -> int:
        return int(self.indices.numel())


def mask_global_crops(n_images: int, grid: tuple[int, int], rng: np.random.Generator,
                      mask_probability: float = 0.5, ratio_range: tuple[float, float] = (0.1, 0.5)) -> MaskBatch:
    """Block masks for a batch of global crops (all crops of all samples, ``n_images`` in total).

    int(n_images · mask_probability) images are masked, the i-th with a ratio uniform in the i-th of
    equal slices of ``ratio_range`` (so ratios spread over the range); the rest are unmasked, and the
    order is shuffled. No block is larger than half the grid.
    """
    height, width = grid
    n_patches = height * width
    n_masked_images = int(n_images * mask_probability)
    edges = np.linspace(*ratio_range, n_masked_images + 1)
    masks = np.zeros((n_images, n_patches), dtype=bool)
    for i in range(n_masked_images):
        target = int(n_patches * rng.uniform(edges[i], edges[i + 1]))
        masks[i] = block_mask(height, width, target, rng, max_block=n_patches // 2).ravel()
    masks = torch.from_numpy(masks[rng.permutation(n_images)])
    per_image = masks.sum(dim=-1, keepdim=True).clamp(min=1)
    return MaskBatch(masks=masks, indices=masks.flatten().nonzero().flatten(),
                     weights=(1.0 / per_image).expand_as(masks)[masks])
