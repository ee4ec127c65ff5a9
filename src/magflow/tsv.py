"""Tables as tab-separated files: what the table steps write and the pages that show them read back."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

from magflow.atomic import atomic_path


def write_tsv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
              fields: Sequence[str] | None = None) -> None:
    """Write ``rows`` atomically; columns: ``fields``, else every key of the rows in order of first appearance
    (a row without a column leaves it empty)."""
    keys = list(fields) if fields is not None else list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, delimiter="\t", restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_tsv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
