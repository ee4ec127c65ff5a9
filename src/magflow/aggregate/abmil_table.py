"""The slide-level AUROC table in the layout of the paper's Tables 1–2: rows are methods, columns tasks.

A cell is "mean ± std" over seeds (sample std). The last column, Average, is the mean over the
row's tasks of their mean AUROC; when some task has none it averages the others and says how many,
e.g. "0.812 (1/2 tasks)". A cell where some seeds had no defined AUROC says
how many counted, e.g. "0.912 ± 0.013 (4/5 seeds)"; a cell with none is "n/a". Every reason (a
skipped record, an undefined seed) is listed in a second table below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from magflow.atomic import atomic_path
from magflow.pages import mean_std, page, table
from magflow.tsv import write_tsv

NOT_COMPUTED = "n/a"
AVERAGE = "Average"


def auroc_cell(record: Mapping[str, Any], digits: int = 3) -> str:
    auroc = record.get("auroc") or {}
    if record.get("status") != "ok" or auroc.get("mean") is None:
        return NOT_COMPUTED
    cell = mean_std(auroc, digits)
    seeds = len(record.get("per_seed") or [])
    return cell if auroc.get("n", seeds) == seeds else f"{cell} ({auroc['n']}/{seeds} seeds)"


def mean_auroc(record: Mapping[str, Any]) -> float | None:
    """The record's mean AUROC over seeds, None when not computed."""
    auroc = record.get("auroc") or {}
    return None if record.get("status") != "ok" or auroc.get("mean") is None else float(auroc["mean"])


def task_average(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float | None, int, int]]:
    """Per method: the mean over its tasks of their mean AUROC, the tasks counted, and the tasks in the table."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    values: dict[str, dict[str, float]] = {}
    for r in records:
        value = mean_auroc(r)
        values.setdefault(r["method"], {})
        if value is not None:
            values[r["method"]][r["task"]] = value
    return {m: ((sum(v.values()) / len(v)) if v else None, len(v), len(tasks)) for m, v in values.items()}


def average_cell(value: float | None, counted: int, total: int, digits: int = 3) -> str:
    if value is None:
        return NOT_COMPUTED
    return f"{value:.{digits}f}" + ("" if counted == total else f" ({counted}/{total} tasks)")


def auroc_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per method, one column per task, both in order of first appearance in ``records``, then Average."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    tasks = list(dict.fromkeys(r["task"] for r in records))
    cells = {(r["method"], r["task"]): auroc_cell(r) for r in records}
    average = task_average(records)
    return [{"method": m, **{t: cells.get((m, t), "") for t in tasks}, AVERAGE: average_cell(*average[m])}
            for m in methods]


def reason_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Why a cell is missing or counts fewer seeds."""
    rows = [{"method": r["method"], "task": r["task"], "seed": "all", "reason": r["reason"]}
            for r in records if r.get("reason")]
    rows += [{"method": r["method"], "task": r["task"], "seed": str(s["seed"]), "reason": s["reason"]}
             for r in records for s in r.get("per_seed") or [] if s.get("reason")]
    return rows


def write_auroc_table(records: Sequence[Mapping[str, Any]], tsv_path: str | os.PathLike[str],
                      html_path: str | os.PathLike[str],
                      title: str = "Slide-level AUROC (AB-MIL)") -> list[dict[str, str]]:
    """Write the table as TSV and as a small HTML page (with the reasons); return its rows."""
    rows = auroc_rows(records)
    write_tsv(tsv_path, rows, None if rows else ["method"])
    intro = ("<p>AUROC on held-out slides, mean ± std over seeds; rows are methods and settings, columns "
             "are tasks (slide sheet columns, <code>aggregate.tasks</code>); Average is the mean over tasks.</p>")
    notes = table(reason_rows(records), "Notes: cells not computed, seeds without an AUROC, classes left out",
                  warn_key="reason")
    with atomic_path(html_path) as tmp:
        tmp.write_text(page(title, intro, table(rows, title), notes))
    return rows


def abmil_table(records: Sequence[str | os.PathLike[str]], tsv: str | os.PathLike[str], html: str | os.PathLike[str],
                design: str | os.PathLike[str] | None = None) -> Path:
    """The `abmil_table` step: the AUROC table of the records (TSV and HTML, in the order given: the table's row
    order) and, when ``design`` is given, the design-decision figure (:mod:`magflow.aggregate.design_figure`)."""
    from magflow.aggregate.design_figure import write_design_figure
    from magflow.aggregate.slide_record import read_record

    write_auroc_table([read_record(path) for path in records], tsv, html,
                      title="Slide-level AB-MIL: AUROC on held-out slides (mean ± std over seeds)")
    if design is not None:
        write_design_figure(records, design)
    return Path(html)
