"""The slide-level AUROC table in the layout of the paper's Tables 1–2: rows are methods, columns tasks.

A cell is "mean ± std" over seeds (sample std). The last column, Average, is the mean over the
row's tasks of their mean AUROC; when some task has none it averages the others and says how many,
e.g. "0.812 (1/2 tasks)". A cell where some seeds had no defined AUROC says
how many counted, e.g. "0.912 ± 0.013 (4/5 seeds)"; a cell with none is "n/a". Every reason (a
skipped record, an undefined seed) is listed in a second table below.

The design figure: the design-decision summary of the AB-MIL table (the aggregation paper's Fig. 3): one panel per choice.

Every row of the table (a method) is first averaged over its tasks (mean of the tasks' mean AUROC over
seeds); a choice's value is then the mean over the rows that share it:

- pretraining: pretrained mixers (every ``{mixer}.{mode}`` row) vs the random mixer on all scales
  (``random.all.{mode}``; the one-magnification random rows answer another question);
- objective: MEM vs CMEM, over the pretrained rows;
- pooled output: cls vs patch, over the pretrained rows.

Bars are those means; dots are the rows that make them. The dashed line is AB-MIL all× on the tile
embeddings (the tasks' mean), for scale. A choice without a row is drawn as "n/a".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from magflow.evaluate.record import read_record
from magflow.pages import mean_std, table, write_page
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
    write_page(html_path, title, intro, table(rows, title), notes)
    return rows


DECISIONS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("pretraining", ("pretrained", "random")),
    ("objective", ("MEM", "CMEM")),
    ("pooled output", ("cls", "patch")),
)


def _choices(record: Mapping[str, Any]) -> dict[str, str]:
    """The design choices a record's method takes (none for the tile baselines and one-scale random rows)."""
    kind, mode = record.get("kind"), record.get("mode")
    if kind == "random" and (record.get("method_id") or "").startswith("random.all."):
        return {"pretraining": "random"}
    if kind != "mixer":
        return {}
    objective = str((record.get("mixer") or {}).get("objective", "")).upper()
    choices = {"pretraining": "pretrained", "pooled output": str(mode)}
    if objective in ("MEM", "CMEM"):
        choices["objective"] = objective
    return choices


def design_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per decision and choice, the task-averaged AUROC of each row taking it (rows with none left out)."""
    average = task_average(records)
    summary: dict[str, dict[str, list[float]]] = {name: {c: [] for c in choices} for name, choices in DECISIONS}
    seen: set[str] = set()
    for record in records:
        method = record["method"]
        if method in seen:
            continue
        seen.add(method)
        value = average[method][0]
        if value is None:
            continue
        for decision, choice in _choices(record).items():
            if choice in summary[decision]:
                summary[decision][choice].append(value)
    return summary


def tile_all_average(records: Sequence[Mapping[str, Any]]) -> float | None:
    """AB-MIL all× on the tile embeddings, averaged over tasks (None when absent)."""
    average = task_average(records)
    for record in records:
        if record.get("method_id") == "tiles.all" or record.get("method") == "ABMIL all×":
            return average[record["method"]][0]
    return None


def write_design_figure(records: Sequence[str | os.PathLike[str]] | Sequence[Mapping[str, Any]],
                        path: str | os.PathLike[str]) -> dict[str, dict[str, list[float]]]:
    """Draw the summary of ``records`` (paths or loaded records) to ``path`` (PNG); return the summary."""
    from magflow.plotting import plt, save

    loaded = [r if isinstance(r, Mapping) else read_record(r) for r in records]
    summary = design_summary(loaded)
    reference = tile_all_average(loaded)
    tasks = list(dict.fromkeys(r["task"] for r in loaded))
    fig, axes = plt.subplots(1, len(DECISIONS), figsize=(3.2 * len(DECISIONS), 3.2), sharey=True)
    for ax, (decision, choices) in zip(np.atleast_1d(axes), DECISIONS):
        for x, choice in enumerate(choices):
            values = summary[decision][choice]
            if values:
                ax.bar(x, float(np.mean(values)), width=0.6, color=f"C{x}", alpha=0.6)
                ax.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values, color="k", s=12,
                           zorder=3)
                rows = f"{len(values)} row" + ("s" if len(values) > 1 else "")
                ax.text(x, 1.02, f"{np.mean(values):.3f}\n({rows})", ha="center", va="bottom", fontsize=7)
            else:
                ax.text(x, 0.5, "n/a", ha="center", va="center", fontsize=9, color="0.4")
        if reference is not None:
            ax.axhline(reference, ls="--", lw=1, color="0.3", label="AB-MIL all× (tiles)")
        ax.set_xticks(range(len(choices)), choices)
        ax.set_xlim(-0.6, len(choices) - 0.4)
        ax.set_title(decision, fontsize=10)
        ax.set_ylim(0, 1.15)
    first = np.atleast_1d(axes)[0]
    first.set_ylabel(f"AUROC, mean over {len(tasks)} task(s)")
    if reference is not None:
        first.legend(fontsize=7, loc="lower left")
    fig.suptitle("AB-MIL design decisions (each row averaged over tasks, bars: mean over rows)", fontsize=10)
    save(fig, path, rect=(0, 0, 1, 0.93))
    return summary


def abmil_table(records: Sequence[str | os.PathLike[str]], tsv: str | os.PathLike[str], html: str | os.PathLike[str],
                design: str | os.PathLike[str] | None = None) -> Path:
    """The `abmil_table` step: the AUROC table of the records (TSV and HTML, in the order given: the table's row
    order) and, when ``design`` is given, the design-decision figure."""
    loaded = [read_record(path) for path in records]
    write_auroc_table(loaded, tsv, html, title="Slide-level AB-MIL: AUROC on held-out slides (mean ± std over seeds)")
    if design is not None:
        write_design_figure(loaded, design)
    return Path(html)
