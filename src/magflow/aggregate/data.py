"""Drawing pretraining batches of regions from many slides' region files.

Every draw takes a NumPy generator (``magflow.pretrain.seeds`` derives one per iteration), so a resumed
run replays the same batches. Regions are drawn uniformly, with replacement, from the listed regions of
all slides. A CMEM context is the c×c block of the coarsest grid centred on a drawn region; its two
views are t×t sub-regions at independent uniform offsets, each redrawn (up to ``REDRAWS`` times) until
it holds a kept coarsest tile, else the centred region itself (which always does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from magflow.aggregate.augment import random_dihedral
from magflow.aggregate.batch import RegionBatch
from magflow.aggregate.mem import mask_tokens
from magflow.aggregate.regions import RegionTokens, SlideRegions
from magflow.errors import ConfigError
from magflow.pretrain import seeds

REDRAWS = 8


class RegionSource:
    """The region files of a pretraining run; all must share t, scales and the tile encoder."""

    def __init__(self, files: Sequence[str | os.PathLike[str]]) -> None:
        if not files:
            raise ConfigError("aggregate pretraining: no region files given")
        self.slides = [SlideRegions(f) for f in files]
        first = self.slides[0]
        for slide in self.slides[1:]:
            for key in ("t", "factors", "target_mpps", "feature_dim", "model"):
                if str(slide.attrs.get(key)) != str(first.attrs.get(key)):
                    raise ConfigError(f"{slide.path}: {key} differs from {first.path}'s; pretrain on region files "
                                      "built with the same aggregate settings and encoder")
        counts = np.array([len(s) for s in self.slides])
        if counts.sum() == 0:
            raise ConfigError(f"aggregate pretraining: none of the {len(files)} region files holds a region "
                              "(no tissue at the coarsest scale); check the slides' tile stores")
        self.index = np.concatenate([np.stack([np.full(n, s), np.arange(n)], 1) for s, n in enumerate(counts)])
        self.t, self.factors = first.t, first.factors
        self.feature_dim, self.n_scales = first.feature_dim, len(first.factors)
        self.side = first.layout.side

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.slides]

    def __len__(self) -> int:
        return len(self.index)

    def identity(self) -> dict[str, object]:
        first = self.slides[0]
        return {"files": [str(p) for p in self.paths], "regions": len(self), "t": self.t,
                "target_mpps": first.target_mpps, "feature_dim": self.feature_dim, "model": str(first.attrs["model"])}

    def _draw(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        return self.index[rng.integers(0, len(self.index), batch_size)]

    def _cut(self, picks: np.ndarray, corners: np.ndarray) -> RegionBatch:
        """Regions at ``corners`` of slides ``picks`` (B), kept in the batch's order."""
        layout = self.slides[0].layout_for(self.t)
        tokens = np.zeros((len(picks), len(layout), self.feature_dim), np.float32)
        valid = np.zeros((len(picks), len(layout)), bool)
        for s in np.unique(picks):
            where = np.flatnonzero(picks == s)
            rows = self.slides[s].token_rows(corners[where], self.t)
            self.slides[s].fill(rows, tokens, where, self.t)
            valid[where] = rows >= 0
        regions = RegionTokens(tokens, valid, layout.scale_id, layout.position, layout.local, layout.cell)
        return RegionBatch.from_tokens(regions, self.side)

    def mem_batch(self, rng: np.random.Generator, batch_size: int) -> RegionBatch:
        picks = self._draw(rng, batch_size)
        corners = np.stack([self.slides[s].regions[r] for s, r in picks])
        return self._cut(picks[:, 0], corners)

    def cmem_batch(self, rng: np.random.Generator, batch_size: int, context: int) -> tuple[RegionBatch, RegionBatch]:
        if context < self.t:
            raise ConfigError(f"aggregate.pretrain.context = {context}: must be >= t = {self.t}")
        picks = self._draw(rng, batch_size)
        centres = np.stack([self.slides[s].regions[r] for s, r in picks])
        origin = centres - (context - self.t) // 2
        views = []
        for _ in range(2):
            corners = centres.copy()
            for b, s in enumerate(picks[:, 0]):
                coarse = self.slides[s].lookups[0]
                for _ in range(REDRAWS):
                    corner = origin[b] + rng.integers(0, context - self.t + 1, 2)
                    block = coarse[max(corner[1], 0):max(corner[1] + self.t, 0),
                                   max(corner[0], 0):max(corner[0] + self.t, 0)]
                    if (block >= 0).any():
                        corners[b] = corner
                        break
            views.append(self._cut(picks[:, 0], corners))
        return views[0], views[1]


class IterationDraws(Dataset):
    """Item i: iteration i's views (one for MEM, two for CMEM) and their masks, on the CPU.

    Everything comes from generators seeded by (seed, i), so loader workers and resumed runs draw the
    same. (Workers are forked: the region files' memory maps are shared, not copied.)
    """

    def __init__(self, source: RegionSource, iterations: int, *, batch_size: int, seed: int, mask_ratio: float,
                 dihedral: bool, context: int | None) -> None:
        self.source, self.iterations, self.batch_size, self.seed = source, iterations, batch_size, seed
        self.mask_ratio, self.dihedral, self.context = mask_ratio, dihedral, context

    def __len__(self) -> int:
        return self.iterations

    def __getitem__(self, iteration: int) -> tuple[list[RegionBatch], list[torch.Tensor]]:
        rng = seeds.numpy_rng(self.seed, 0, iteration, "data")
        views = [self.source.mem_batch(rng, self.batch_size)] if self.context is None else \
            list(self.source.cmem_batch(rng, self.batch_size, self.context))
        if self.dihedral:
            generator = seeds.torch_generator(self.seed, 0, iteration, "views")
            views = [random_dihedral(v, generator) for v in views]
        generator = seeds.torch_generator(self.seed, 0, iteration, "masks")
        return views, [mask_tokens(v.valid, self.mask_ratio, generator) for v in views]
