"""Training tiles by magnification: for each drawn target mpp, a tile of the standard scale that serves it.

A train tile set stores every tile at the standard scales (0.25/0.5/1.0/2.0 mpp) with S = 2·C px source
patches, so a target t in [0.25, 2.0] is cut from the next finer standard scale s ≤ t (a window of
G·t/s < 2·G px) without upsampling. A batch is a pure function of (seed, rank, iteration): B targets
from the sampler's distribution, and for each a tile drawn uniformly (with replacement) from all stores'
tiles at its scale. Ranks draw independent streams, so the union over ranks follows the distribution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from magflow.errors import ConfigError, MagflowError, UpsamplingError
from magflow.pretrain.seeds import numpy_rng
from magflow.preprocess.dataset import TileDataset
from magflow.sampling.distributions import MppDistribution
from magflow.sampling.draw import draw_mpps
from magflow.sampling.transforms import crop_size, pick_source_scale

SCALE_TOL = 1e-9  # scales are chosen on nominal mpps: never one coarser than the target


class TileSource:
    """The tiles of some train tile stores, grouped by standard scale."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], global_size: int) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ConfigError("pretraining needs at least one tile store; list the train stores under 'stores'")
        self.global_size = global_size
        self.stores: list[dict[str, Any]] = []
        source_px: set[int] = set()
        for path in self.paths:
            if not path.is_file():
                raise ConfigError(f"tile store {path} does not exist; run the tile extraction first or fix the path")
            with h5py.File(path, "r") as h5:
                tiles = {float(g.attrs["target_mpp"]): len(g["grid"]) for g in h5.values()}
                source_px |= {int(g.attrs["source_px"]) for g in h5.values() if len(g["grid"])}
                self.stores.append({"path": str(path), "slide_id": str(h5.attrs["slide_id"]),
                                    "tiles": {f"{mpp:g}": n for mpp, n in sorted(tiles.items())}})
        if len(source_px) != 1:
            raise ConfigError(f"tile stores {[str(p) for p in self.paths]} have source patches of sizes "
                              f"{sorted(source_px) or 'none (no tiles)'}; train on stores of one tile set")
        self.source_px = source_px.pop()
        self.scales = sorted({float(m) for s in self.stores for m, n in s["tiles"].items() if n})
        self.datasets = {scale: TileDataset(self.paths, scales=[scale]) for scale in self.scales}

    def scale_for(self, target_mpp: float) -> float:
        """The standard scale that serves ``target_mpp``: the coarsest one not coarser than it."""
        return pick_source_scale(target_mpp, self.scales, tol=SCALE_TOL)

    def check_serves(self, distribution: MppDistribution, out_size: int | None = None,
                     size_key: str | None = None) -> None:
        """Refuse, before training, a distribution with targets no stored scale serves without upsampling.

        A target's window is ``out_size`` px at the target (default: ``global_size``), cut from the
        next finer stored scale. With ``size_key`` (the setting that sets ``out_size``), a window larger
        than the stored patches is refused with the largest window needed and what to set instead.
        """
        out_size = self.global_size if out_size is None else out_size
        drawn = distribution.mass > 0
        lo, hi = float(distribution.cell_lo[drawn].min()), float(distribution.cell_hi[drawn].max())
        # the hardest targets: the ends of every drawn cell, and just below each scale inside one (the largest
        # target cut from the next finer scale); an atom is its own only target
        cells_lo, cells_hi = distribution.cell_lo[drawn], distribution.cell_hi[drawn]
        hardest = sorted({float(t) for t in np.concatenate([cells_lo, cells_hi])}
                         | {s * (1 - 2 * SCALE_TOL) for s in self.scales if np.any((cells_lo < s) & (s <= cells_hi))})
        for target in hardest:
            try:
                pick_source_scale(target, self.scales, out_size=out_size, source_size=self.source_px,
                                  tol=SCALE_TOL)
            except MagflowError as error:  # a ConfigError (no fit) or an UpsamplingError (too fine)
                if size_key is not None and not isinstance(error, UpsamplingError):
                    raise ConfigError(self._too_small(hardest, out_size, size_key, lo, hi)) from None
                raise ConfigError(f"sampler range [{lo:g}, {hi:g}] mpp cannot be served by the stores: {error}") \
                    from None

    def _window(self, target: float, out_size: int) -> int:
        """Side in stored px of the window that becomes ``out_size`` px at ``target`` (nominal scales)."""
        return crop_size(out_size, self.scale_for(target), target, tol=SCALE_TOL)

    def _too_small(self, targets: Sequence[float], out_size: int, size_key: str, lo: float, hi: float) -> str:
        worst = max(targets, key=lambda t: (t / self.scale_for(t), t))  # the largest window for every size
        needed = self._window(worst, out_size)
        fits = next((n for n in range(out_size - 1, 0, -1) if self._window(worst, n) <= self.source_px), 0)
        below = next((f"just below {s:g}" for s in self.scales if s * (1 - 1e-6) < worst < s), f"{worst:g}")
        return (f"{size_key} = {out_size} px at the sampler's mpps [{lo:g}, {hi:g}] needs windows of up to {needed} "
                f"px of the stored patches (a target {below} mpp is cut from the {self.scale_for(worst):g} mpp "
                f"scale, never upsampled), but the stores' tile set (pretrain.tileset) has source_px {self.source_px}: "
                + (f"set {size_key} <= {fits}, or " if fits >= self.global_size else "")
                + f"extract that tile set with source_px >= {needed}")

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())

    def draw(self, distribution: MppDistribution, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """B target mpps, then a tile for each: images B×3×S×S uint8 and what they are."""
        targets = draw_mpps(distribution, batch_size, rng)
        scales = [self.scale_for(float(t)) for t in targets]
        indices = [int(rng.integers(len(self.datasets[s]))) for s in scales]
        items = [self.datasets[s][i] for s, i in zip(scales, indices)]
        return {
            "images": torch.stack([item["image"] for item in items]),
            "target_mpp": torch.as_tensor(targets, dtype=torch.float64),
            "source_mpp": torch.tensor([item["mpp"] for item in items], dtype=torch.float64),
            "scale": torch.tensor(scales, dtype=torch.float64),
            "tile": torch.tensor(indices, dtype=torch.long),  # row in the scale's TileDataset
            "slide": [item["slide"] for item in items],
        }


class IterationBatches(Dataset[dict[str, Any]]):
    """Item i is this rank's batch of iteration i, so a DataLoader over range(start, stop) resumes exactly."""

    def __init__(self, source: TileSource, distribution: MppDistribution, batch_size: int, seed: int,
                 rank: int, iterations: int) -> None:
        self.source, self.distribution = source, distribution
        self.batch_size, self.seed, self.rank, self.iterations = batch_size, seed, rank, iterations

    def __len__(self) -> int:
        return self.iterations

    def __getitem__(self, iteration: int) -> dict[str, Any]:
        return self.source.draw(self.distribution, self.batch_size, numpy_rng(self.seed, self.rank, iteration, "data"))
