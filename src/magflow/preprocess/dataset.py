"""A PyTorch Dataset over many tile stores, safe with DataLoader worker processes.

File handles are opened lazily, once per process, so a Dataset built in the main process can be
pickled to workers (each opens its own handles on first use).
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

from magflow.preprocess.store import TileImages, group_name


class TileDataset(Dataset[dict[str, Any]]):
    """Every tile of the given scales in the given stores.

    Items are dicts: ``image`` (uint8 tensor, 3×S×S), ``mpp`` (achieved), ``target_mpp``, ``slide``,
    ``grid`` ((col, row) tensor), ``index`` (row in its group).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], scales: Sequence[float] | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self._entries: list[tuple[int, str, int]] = []  # (file, group, count)
        self._meta: dict[tuple[int, str], tuple[float, float, str]] = {}
        for file_index, path in enumerate(self.paths):
            with h5py.File(path, "r") as h5:
                slide = str(h5.attrs["slide_id"])
                for name, group in h5.items():
                    target = float(group.attrs["target_mpp"])
                    if scales is not None and not any(group_name(s) == name for s in scales):
                        continue
                    count = len(group["grid"])
                    if count:
                        self._entries.append((file_index, name, count))
                        self._meta[(file_index, name)] = (float(group.attrs["mpp"]), target, slide)
        self._offsets = np.cumsum([0] + [count for _, _, count in self._entries])
        self._handles: dict[int, h5py.File] = {}
        self._images: dict[tuple[int, str], TileImages] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _file(self, index: int) -> h5py.File:
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share parent handles
            self._handles, self._images, self._pid = {}, {}, os.getpid()
        if index not in self._handles:
            self._handles[index] = h5py.File(self.paths[index], "r")
        return self._handles[index]

    def __getitem__(self, item: int) -> dict[str, Any]:
        if not 0 <= item < len(self):
            raise IndexError(item)
        entry = int(np.searchsorted(self._offsets, item, side="right") - 1)
        file_index, name, _ = self._entries[entry]
        row = item - int(self._offsets[entry])
        group = self._file(file_index)[name]
        if (file_index, name) not in self._images:
            self._images[(file_index, name)] = TileImages(group)
        mpp, target, slide = self._meta[(file_index, name)]
        return {
            "image": torch.from_numpy(self._images[(file_index, name)][row]).permute(2, 0, 1).contiguous(),
            "mpp": mpp,
            "target_mpp": target,
            "slide": slide,
            "grid": torch.from_numpy(group["grid"][row]),
            "index": row,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_images"] = {}, {}
        return state
