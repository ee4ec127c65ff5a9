"""The slides of a workflow: the slide sheet, read and checked once, and what each slide brings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from magflow.errors import ConfigError
from magflow.phantom.phantom import PHANTOM_SHEET_COLUMNS
from magflow.sheet import SlideEntry, read_sheet

PHANTOM_FOLDER = "results/phantom/"  # where the phantom rule writes a demo slide and its truth
TABLE_EXTENSIONS = (".csv", ".tsv")  # a tile-label table, not a label mask


def require_tileset(config: Mapping[str, Any], key: str) -> str:
    """The tile set named by the dotted config ``key`` (e.g. ``embed.tileset``); an error naming the key when
    ``tilesets`` has no such entry."""
    value: Any = config
    for part in key.split("."):
        value = value[part]
    if value not in config["tilesets"]:
        raise ConfigError(f"{key}: '{value}' is not a tile set; tilesets: {', '.join(config['tilesets'])}")
    return str(value)


def is_mask(path: str) -> bool:
    """Whether a label file is a label mask (with a JSON sidecar) rather than a tile-label table."""
    return not path.lower().endswith(TABLE_EXTENSIONS)


@dataclass(frozen=True)
class SlidePlan:
    """The slide sheet's rows, in its order."""

    entries: tuple[SlideEntry, ...]

    @property
    def ids(self) -> list[str]:
        return [e.slide_id for e in self.entries]

    @cached_property
    def by_id(self) -> dict[str, SlideEntry]:
        """Slide id -> its row: every per-slide look-up of a parse (and of each job) is a dict look-up."""
        return {e.slide_id: e for e in self.entries}

    def entry(self, slide_id: str) -> SlideEntry:
        return self.by_id[slide_id]

    def is_phantom(self, slide_id: str) -> bool:
        """A demo slide the phantom rule writes."""
        return self.entry(slide_id).path.startswith(PHANTOM_FOLDER)

    def tracked_input(self, slide_id: str) -> str | None:
        """The slide file as a tracked input when it exists or a rule writes it (a phantom), else None: a missing
        file is then no input, so it fails only its own job, with a message naming it, and --keep-going runs
        the others."""
        path = self.entry(slide_id).path
        return path if self.is_phantom(slide_id) or os.path.exists(path) else None

    def label_source(self, slide_id: str) -> str | None:
        """Where a slide's tile labels come from: its sheet `annotation` (label mask or CSV), else a phantom's truth."""
        entry = self.entry(slide_id)
        if entry.annotation:
            return entry.annotation
        return f"{PHANTOM_FOLDER}{slide_id}.labels.png" if self.is_phantom(slide_id) else None

    def label_sources(self) -> dict[str, str | None]:
        return {s: self.label_source(s) for s in self.ids}

    def masks(self) -> dict[str, str]:
        """Slide id → label mask (a CSV is no mask): the ground truth that segmentation is scored against."""
        return {s: p for s, p in self.label_sources().items() if p and is_mask(p)}

    def splits(self) -> dict[str, str]:
        """The sheet's split column."""
        return {e.slide_id: e.split for e in self.entries}

    def groups(self) -> dict[str, str | None]:
        return {e.slide_id: e.group for e in self.entries}

    def train_ids(self) -> list[str]:
        """Self-supervised training sees only the train split, so val/test slides stay unseen."""
        return [e.slide_id for e in self.entries if e.split == "train"]

    def column(self, name: str) -> dict[str, str | None]:
        """A label column of the sheet (``label``, ``cross_scale`` or a task): slide -> value (None: empty)."""
        return {e.slide_id: e.value(name) for e in self.entries}

    def table(self) -> pd.DataFrame:
        """The standard columns, one row per slide, empty cells None: what the sheet's schema validates."""
        frame = pd.DataFrame([e.as_dict() for e in self.entries]).set_index("slide_id", drop=False)
        return frame.astype(object).where(frame.notna(), None)


def read_slides(config: Mapping[str, Any]) -> SlidePlan:
    """The sheet of config `slides`, with the task columns of aggregate.tasks and a phantom's cross_scale."""
    tasks = (config.get("aggregate") or {}).get("tasks") or ()
    return SlidePlan(tuple(read_sheet(config["slides"], extra_columns=[*tasks, *PHANTOM_SHEET_COLUMNS])))
