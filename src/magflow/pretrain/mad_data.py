"""MAD training items from nested tile stores: a context tile and aligned children, or a standalone tile.

Every item is one of:

- a *transition* (probability 1 − ``standalone_p``): a transition coarse→fine drawn by
  ``transition_weights``, a parent tile at the coarse scale drawn uniformly among those with at least
  ``children`` present children, and ``children`` of its factor² aligned children at the fine scale
  (``TileStore.children``, index arithmetic on the nested grids). Children missing from the store
  (background) are replaced from the remaining present ones, i.e. the children are drawn without
  replacement among the present ones. Parents with fewer present children are never drawn: they
  are counted per transition (``skipped_parents``), which is the same as skipping such an item
  when it is drawn and drawing again;
- a *standalone* tile (probability ``standalone_p``): a scale drawn uniformly among the tile set's
  scales, then a tile uniformly among that scale's tiles.

A batch is a pure function of (seed, rank, iteration), like :class:`magflow.pretrain.data.IterationBatches`;
its transition items come first, then its standalone items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from magflow.errors import ConfigError
from magflow.preprocess.store import TileImages, TileStore, group_name
from magflow.pretrain.mad_config import KEY, MadConfig
from magflow.pretrain.seeds import numpy_rng


@dataclass(frozen=True)
class Transition:
    """Every drawable parent of one coarse→fine transition, over all stores."""

    coarse: float            # nominal mpps
    fine: float
    store: np.ndarray        # (N,) store index of each eligible parent
    parent: np.ndarray       # (N,) row in the store's coarse group
    kids: np.ndarray         # (N, factor²) rows in the fine group, k order, −1 where missing
    skipped_parents: int     # parents with fewer present children than an item needs

    @property
    def name(self) -> str:
        return f"{self.coarse:g}>{self.fine:g}"


def _children_rows(store: TileStore, coarse: float, fine: float) -> np.ndarray:
    """(parents, factor²) store rows of every coarse tile's aligned children (−1: missing), vectorised
    ``TileStore.children``."""
    factor = store.factor(coarse, fine)
    grid = store.group(coarse)["grid"][...].astype(np.int64).reshape(-1, 2)
    k = np.arange(factor * factor)
    cols = grid[:, :1] * factor + k % factor
    rows = grid[:, 1:] * factor + k // factor
    table = store.lookup(fine)
    inside = (rows < table.shape[0]) & (cols < table.shape[1])
    found = np.full(cols.shape, -1, np.int64)
    found[inside] = table[rows[inside], cols[inside]]
    return found


class MadSource:
    """The parents, children and standalone tiles of some MAD tile stores (one tile set)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], config: MadConfig) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ConfigError("MAD pretraining needs at least one tile store of the MAD tile set")
        self.config = config
        self.stores: list[dict[str, Any]] = []
        self.slides: list[str] = []
        sizes: set[tuple[int, int]] = set()
        self._achieved: list[dict[float, float]] = []
        self._tiles: dict[float, list[np.ndarray]] = {}
        for path in self.paths:
            if not path.is_file():
                raise ConfigError(f"tile store {path} does not exist; run the tile extraction first or fix the path")
            with TileStore(path) as store:
                counts = {m: len(store.group(m)["grid"]) for m in store.scales}
                sizes |= {(int(store.group(m).attrs["cell_px"]), int(store.group(m).attrs["source_px"]))
                          for m, n in counts.items() if n}
                self._achieved.append({m: float(store.group(m).attrs["mpp"]) for m in store.scales})
                self.slides.append(str(store.attrs["slide_id"]))
                self.stores.append({"path": str(path), "slide_id": self.slides[-1],
                                    "tiles": {f"{m:g}": n for m, n in sorted(counts.items())}})
        if len(sizes) != 1:
            raise ConfigError(f"MAD tile stores {[str(p) for p in self.paths]} have (cell, source) sizes "
                              f"{sorted(sizes) or 'none (no tiles)'}; train on the stores of one tile set")
        self.cell_px, self.source_px = sizes.pop()
        self.scales = sorted({m for s in self.stores for m, n in s["tiles"].items() if n}, key=float, reverse=True)
        self.scales = [float(m) for m in self.scales]  # coarsest first
        self.transitions = self._transitions()
        self.standalone = {m: self._standalone(m) for m in self.scales}
        self._handles: dict[int, h5py.File] = {}
        self._datasets: dict[tuple[int, float], TileImages] = {}
        self._pid = os.getpid()

    def _transitions(self) -> list[Transition]:
        pairs = list(zip(self.scales[:-1], self.scales[1:]))
        weights = self.config.transition_weights
        if len(weights) != len(pairs):
            names = ", ".join(f"{c:g}>{f:g} mpp" for c, f in pairs) or "none (one scale)"
            raise ConfigError(f"{KEY}.transition_weights: {len(weights)} weight(s) for the {len(pairs)} transition(s) "
                              f"of the MAD stores' scales {self.scales} ({names}); give one weight per transition")
        out = []
        for (coarse, fine), weight in zip(pairs, weights):
            stores, parents, kids, skipped = [], [], [], 0
            for index, path in enumerate(self.paths):
                with TileStore(path) as store:
                    if not {coarse, fine} <= set(store.scales) or not len(store.group(coarse)["grid"]):
                        continue
                    rows = _children_rows(store, coarse, fine)
                if rows.shape[1] < self.config.children:
                    raise ConfigError(f"{KEY}.children: {self.config.children} children per item, but a {coarse:g} "
                                      f"mpp tile has only {rows.shape[1]} at {fine:g} mpp in {path}")
                ok = (rows >= 0).sum(axis=1) >= self.config.children
                skipped += int((~ok).sum())
                stores.append(np.full(int(ok.sum()), index))
                parents.append(np.flatnonzero(ok))
                kids.append(rows[ok])
            width = max((k.shape[1] for k in kids), default=0)
            transition = Transition(coarse, fine, np.concatenate(stores or [np.zeros(0, np.int64)]).astype(np.int64),
                                    np.concatenate(parents or [np.zeros(0, np.int64)]).astype(np.int64),
                                    np.concatenate(kids) if kids else np.zeros((0, width), np.int64), skipped)
            if weight > 0 and not len(transition.parent):
                raise ConfigError(f"{KEY}.transition_weights: transition {transition.name} mpp has weight {weight:g} "
                                  f"but no {coarse:g} mpp tile with >= {self.config.children} of its children at "
                                  f"{fine:g} mpp ({skipped} have fewer); set its weight to 0 or check the stores")
            out.append(transition)
        return out

    def _standalone(self, scale: float) -> np.ndarray:
        """(N, 2) (store index, row) of every tile at ``scale``."""
        parts = [np.stack([np.full(n, i), np.arange(n)], 1) for i, s in enumerate(self.stores)
                 if (n := s["tiles"].get(f"{scale:g}", 0))]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 2), np.int64)

    def summary(self) -> dict[str, Any]:
        """What the items are drawn from, for the log and the model card."""
        return {"scales": self.scales, "cell_px": self.cell_px, "source_px": self.source_px,
                "transitions": {t.name: {"parents": len(t.parent), "skipped_parents": t.skipped_parents}
                                for t in self.transitions},
                "standalone_tiles": {f"{m:g}": len(tiles) for m, tiles in self.standalone.items()}}

    def _images(self, store: int, scale: float) -> TileImages:
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share parent handles
            self._handles, self._datasets, self._pid = {}, {}, os.getpid()
        if (store, scale) not in self._datasets:
            if store not in self._handles:
                self._handles[store] = h5py.File(self.paths[store], "r")
            self._datasets[(store, scale)] = TileImages(self._handles[store][group_name(scale)])
        return self._datasets[(store, scale)]

    def _image(self, store: int, scale: float, row: int) -> torch.Tensor:
        return torch.from_numpy(self._images(store, scale)[row]).permute(2, 0, 1)

    def draw(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """One batch: its transition items' pixels and provenance first, then its standalone items'."""
        config, n = self.config, self.config.children
        n_standalone = int((rng.random(batch_size) < config.standalone_p).sum())
        n_transition = batch_size - n_standalone
        which = rng.choice(len(self.transitions), size=n_transition, p=config.probabilities())
        parents, children, child_k, info = [], [], [], []
        for t in which:
            transition = self.transitions[t]
            pick = int(rng.integers(len(transition.parent)))
            store, parent, kids = int(transition.store[pick]), int(transition.parent[pick]), transition.kids[pick]
            k = np.sort(rng.choice(np.flatnonzero(kids >= 0), size=n, replace=False))
            parents.append(self._image(store, transition.coarse, parent))
            children.append(torch.stack([self._image(store, transition.fine, int(kids[j])) for j in k]))
            child_k.append(k)
            info.append((t, store, parent, transition.coarse, transition.fine, kids[k]))
        stand_scales = [m for m in self.scales if len(self.standalone[m])]
        standalone, stand_info = [], []
        for _ in range(n_standalone):
            scale = stand_scales[int(rng.integers(len(stand_scales)))]
            store, row = (int(v) for v in self.standalone[scale][int(rng.integers(len(self.standalone[scale])))])
            standalone.append(self._image(store, scale, row))
            stand_info.append((store, row, scale))
        side = (3, self.source_px, self.source_px)
        achieved = self._achieved
        return {
            "parents": torch.stack(parents) if parents else torch.zeros((0, *side), dtype=torch.uint8),
            "children": torch.stack(children) if children else torch.zeros((0, n, *side), dtype=torch.uint8),
            "transition": torch.tensor([i[0] for i in info], dtype=torch.long),
            "coarse_mpp": torch.tensor([achieved[i[1]][i[3]] for i in info], dtype=torch.float64),
            "fine_mpp": torch.tensor([achieved[i[1]][i[4]] for i in info], dtype=torch.float64),
            "parent_row": torch.tensor([i[2] for i in info], dtype=torch.long),
            "child_rows": torch.tensor(np.array([i[5] for i in info]).reshape(-1, n), dtype=torch.long),
            "child_k": torch.tensor(np.array(child_k).reshape(-1, n), dtype=torch.long),
            "standalone": torch.stack(standalone) if standalone else torch.zeros((0, *side), dtype=torch.uint8),
            "standalone_mpp": torch.tensor([achieved[s][m] for s, _, m in stand_info], dtype=torch.float64),
            "standalone_row": torch.tensor([r for _, r, _ in stand_info], dtype=torch.long),
            "store": torch.tensor([i[1] for i in info] + [s for s, _, _ in stand_info], dtype=torch.long),
            "slide": [self.slides[i[1]] for i in info] + [self.slides[s] for s, _, _ in stand_info],
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_datasets"] = {}, {}
        return state


class MadBatches(Dataset[dict[str, Any]]):
    """Item i is this rank's MAD batch of iteration i (a DataLoader over range(start, stop) resumes exactly)."""

    def __init__(self, source: MadSource, batch_size: int, seed: int, rank: int, iterations: int) -> None:
        self.source, self.batch_size, self.seed, self.rank, self.iterations = source, batch_size, seed, rank, iterations

    def __len__(self) -> int:
        return self.iterations

    def __getitem__(self, iteration: int) -> dict[str, Any]:
        return self.source.draw(self.batch_size, numpy_rng(self.seed, self.rank, iteration, "data"))
