"""The slide sheet: one row per slide (slide_id, path, mpp?, split, group?, label?, annotation?,
brightfield_check?), plus any extra label columns the caller names (the AB-MIL tasks of
``aggregate.tasks``), kept as strings in ``SlideEntry.extra``; any other column is refused."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from magflow.errors import ConfigError
from magflow.sheet_lines import NumberedRows

SPLITS = ("train", "val", "test")
REQUIRED = ("slide_id", "path", "split")
OPTIONAL = ("mpp", "group", "label", "annotation", "brightfield_check")
SWITCH = {"": True, "on": True, "off": False}  # brightfield_check: empty means on
SLIDE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # used in file names and Snakemake wildcards


@dataclass(frozen=True)
class SlideEntry:
    slide_id: str
    path: str
    split: str
    mpp: float | None = None
    group: str | None = None
    label: str | None = None
    annotation: str | None = None
    brightfield_check: bool = True  # False: accept a slide that does not look like a brightfield scan
    extra: Mapping[str, str | None] = field(default_factory=dict, hash=False)  # the extra columns asked for (None: empty)

    def as_dict(self) -> dict[str, object]:
        """The standard columns (``extra`` left out)."""
        values = asdict(self)
        values.pop("extra")
        return values

    def value(self, column: str) -> str | None:
        """A label column's value: a standard one (e.g. ``label``) or an extra one; None when empty."""
        if column in self.extra:
            return self.extra[column]
        value = getattr(self, column, None) if column in OPTIONAL else None
        return None if value is None else str(value)


def _mpp(value: str, where: str) -> float | None:
    if value.strip() == "":
        return None
    try:
        mpp = float(value)
    except ValueError:
        raise ConfigError(f"{where}: mpp '{value}' is not a number; give microns per pixel (e.g. 0.25) "
                          "or leave it empty to read it from the file") from None
    if not math.isfinite(mpp) or mpp <= 0:
        raise ConfigError(f"{where}: mpp must be a positive number of microns per pixel, got '{value}'")
    return mpp


def _switch(value: str, where: str) -> bool:
    if value.strip().lower() not in SWITCH:
        raise ConfigError(f"{where}: brightfield_check '{value}' must be 'on' (or empty: refuse a slide that "
                          "does not look like a brightfield scan) or 'off' (accept it deliberately)")
    return SWITCH[value.strip().lower()]


def read_sheet(path: str | os.PathLike[str], extra_columns: Iterable[str] = ()) -> list[SlideEntry]:
    """Read and check a tab-separated slide sheet; every error names the file, the line (as an editor shows
    it: ``#`` comment and blank lines are skipped but counted) and the column. ``extra_columns`` are
    further columns to accept and keep (e.g. task labels); present or not, they are allowed."""
    path = Path(path)
    extras = [c for c in dict.fromkeys(str(c) for c in extra_columns) if c not in REQUIRED + OPTIONAL]
    if not path.is_file():
        raise ConfigError(f"slide sheet '{path}' not found: set `slides` in the config to a TSV file "
                          f"with columns {', '.join(REQUIRED + OPTIONAL)}")
    with path.open(newline="") as handle:
        reader = NumberedRows(handle)
        columns = reader.fieldnames
        missing = [c for c in REQUIRED if c not in columns]
        unknown = [c for c in columns if c not in REQUIRED + OPTIONAL + tuple(extras)]
        if missing or unknown:
            raise ConfigError(f"slide sheet '{path}': missing columns {missing}, unknown columns {unknown}; "
                              f"allowed: {', '.join(REQUIRED + OPTIONAL + tuple(extras))} (tab-separated; a "
                              "further label column is allowed once aggregate.tasks names it)")
        entries: list[SlideEntry] = []
        for line, row in reader:
            where = f"slide sheet '{path}', line {line}"
            values = {k: (v or "").strip() for k, v in row.items() if k is not None}
            for key in REQUIRED:
                if not values.get(key):
                    raise ConfigError(f"{where}: column '{key}' is empty")
            if not SLIDE_ID.match(values["slide_id"]):
                raise ConfigError(f"{where}: slide_id '{values['slide_id']}' may use only letters, digits, "
                                  "'.', '_' and '-' (it becomes a file name)")
            if values["split"] not in SPLITS:
                raise ConfigError(f"{where}: split '{values['split']}' must be one of {', '.join(SPLITS)}")
            entries.append(SlideEntry(
                slide_id=values["slide_id"], path=values["path"], split=values["split"],
                mpp=_mpp(values.get("mpp", ""), where),
                group=values.get("group") or None, label=values.get("label") or None,
                annotation=values.get("annotation") or None,
                brightfield_check=_switch(values.get("brightfield_check", ""), where),
                extra={c: values.get(c) or None for c in extras if c in columns},
            ))
    ids = [e.slide_id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"slide sheet '{path}': slide_id must be unique; repeated: {', '.join(duplicates)}")
    if not entries:
        raise ConfigError(f"slide sheet '{path}' lists no slides")
    return entries
