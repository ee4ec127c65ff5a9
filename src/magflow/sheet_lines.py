"""Rows of a sheet (a TSV or CSV file) numbered by their line in the file, as an editor shows it.

Every sheet magflow reads skips lines that start with ``#`` and blank lines, as
``pandas.read_csv(sep="\\t", comment="#")`` does. An error about a row names its line in the file: the
header is line 1 and the skipped comment and blank lines are counted, so "line 7" is the line a user
opens, not the seventh row that was kept.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence

DEFAULT_DELIMITER = "\t"


def is_data(line: str) -> bool:
    """Whether a line is the header or a row: not a ``#`` comment and not blank (spaces only count as blank,
    as for pandas; a line of tabs is a row of empty cells)."""
    return not line.startswith("#") and bool(line.strip(" \r\n"))


def data_lines(path: str | os.PathLike[str]) -> list[int]:
    """The line numbers in ``path`` of its data rows, in the order pandas (``comment="#"``) reads them."""
    with open(path, encoding="utf-8") as handle:
        kept = [number for number, line in enumerate(handle, start=1) if is_data(line)]
    return kept[1:]


def row_lines(lines: Sequence[int] | None, rows: int) -> Sequence[int]:
    """The file line of each of ``rows`` rows: ``lines`` (from :func:`data_lines`) when it numbers every row,
    else 2, 3, ...: a header on line 1 and neither comment nor blank lines (e.g. rows built in code)."""
    return lines if lines is not None and len(lines) == rows else range(2, rows + 2)


class NumberedRows:
    """A :class:`csv.DictReader` over the data lines of ``handle`` that gives each row with its line number.

    Iterating yields ``(line, row)``; a row whose quoted cell spans lines is numbered by its first line.
    """

    def __init__(self, handle: Iterable[str], delimiter: str = DEFAULT_DELIMITER) -> None:
        self._kept: list[int] = []  # line numbers of the lines handed to the reader so far
        self._reader = csv.DictReader(self._data(handle), delimiter=delimiter)

    def _data(self, handle: Iterable[str]) -> Iterator[str]:
        for number, line in enumerate(handle, start=1):
            if is_data(line):
                self._kept.append(number)
                yield line

    @property
    def fieldnames(self) -> list[str]:
        """The header's column names (reads the header; empty for an empty file)."""
        return list(self._reader.fieldnames or [])

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        if self._reader.fieldnames is None:  # reads the header first, so that line_num counts from it
            return
        start = self._reader.line_num  # lines the reader has taken: the next row starts at the next one
        for row in self._reader:
            yield self._kept[start], row
            start = self._reader.line_num
