"""Reading the planned views from the tile stores: each source patch read once, every view it serves cut from it.

A batch is up to ``batch_size`` views, of any mpps, in (store, scale, patch) order; each window is
resized to the C px view as it is cut (``resize_window``), so a batch is B×3×C×C whatever its windows'
sizes (a 1792 px window never waits in memory with 63 others).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from magflow.embed.protocol import ViewPlan, cut_window, resize_window
from magflow.preprocess.store import TileImages

CHUNK_CACHE_BYTES = 16 * 2**20  # for compressed stores (read through h5py): a few source patches


@dataclass(frozen=True)
class ViewJobs:
    """One row per view: which tile, at which mpp, from which source patch window."""

    tile: np.ndarray    # row in the output
    mpp: np.ndarray     # index into the list of target mpps
    store: np.ndarray   # index into the list of stores
    group: np.ndarray   # index into the list of group names
    row: np.ndarray     # source patch row in that group
    x: np.ndarray       # window top-left inside the patch
    y: np.ndarray
    w: np.ndarray       # window side

    def __len__(self) -> int:
        return len(self.tile)

    @classmethod
    def concat(cls, parts: list[ViewJobs]) -> ViewJobs:
        names = cls.__dataclass_fields__
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]).astype(np.int64) if parts
                      else np.zeros(0, np.int64) for k in names})

    @classmethod
    def from_plans(cls, plans: Sequence[ViewPlan], first: int = 0, store: int = 0,
                   groups: list[str] | None = None) -> ViewJobs:
        """The jobs of one slide's plans (plan i is target mpp i; tile rows start at ``first``).

        ``groups`` collects the source group names that the jobs' ``group`` indices point into.
        """
        groups = [] if groups is None else groups
        parts = []
        for index, plan in enumerate(plans):
            valid = np.flatnonzero(plan.valid)
            if plan.group not in groups:
                groups.append(plan.group)
            full = np.ones(len(valid), np.int64)
            parts.append(cls(tile=first + valid, mpp=full * index, store=full * store,
                             group=full * groups.index(plan.group), row=plan.rows[valid], x=plan.offsets[valid, 0],
                             y=plan.offsets[valid, 1], w=full * plan.crop_px))
        return cls.concat(parts)

    def batches(self, batch_size: int) -> list[list[int]]:
        """Job indices in batches of ``batch_size``, in (store, group, row, mpp) order: the jobs of one
        source patch are neighbours, so the patch is read (or decoded) once for all its views."""
        order = np.lexsort((self.mpp, self.row, self.group, self.store))
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class ViewBatches(Dataset):
    """Item b: (the B×3×C×C float views in [0, 1] of batch b, their job indices). Files open lazily, once per worker.

    Each source patch a batch needs is read (or decoded) once, through ``TileImages``, so the views of
    one patch share the read.
    """

    def __init__(self, stores: list[str | os.PathLike[str]], groups: list[str], jobs: ViewJobs,
                 batches: list[list[int]], cell_px: int) -> None:
        self.cell_px = cell_px
        self.stores = [str(s) for s in stores]
        self.groups = groups
        self.jobs = jobs
        self.batches = batches
        self._files: dict[int, h5py.File] = {}
        self._images_of: dict[tuple[int, int], TileImages] = {}

    def __len__(self) -> int:
        return len(self.batches)

    def _images(self, store: int, group: int) -> TileImages:
        if (store, group) not in self._images_of:
            if store not in self._files:
                self._files[store] = h5py.File(self.stores[store], "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            self._images_of[(store, group)] = TileImages(self._files[store][self.groups[group]])
        return self._images_of[(store, group)]

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        jobs, index = self.jobs, np.asarray(self.batches[b], np.int64)
        views = torch.empty((len(index), 3, self.cell_px, self.cell_px), dtype=torch.float32)
        patch, key = None, None
        for n, i in enumerate(index.tolist()):  # batches are in (store, group, row) order: one read per patch
            job_key = (int(jobs.store[i]), int(jobs.group[i]), int(jobs.row[i]))
            if job_key != key:
                key, patch = job_key, self._images(job_key[0], job_key[1])[job_key[2]]
            views[n] = resize_window(cut_window(patch, np.array([jobs.x[i], jobs.y[i]]), int(jobs.w[i])), self.cell_px)
        return views, torch.from_numpy(index)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._images_of.clear()

    def __getstate__(self) -> dict[str, Any]:  # workers open their own handles
        return {**self.__dict__, "_files": {}, "_images_of": {}}
