"""The design-decision summary of the AB-MIL table (the aggregation paper's Fig. 3): one panel per choice.

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
from typing import Any

import numpy as np

from magflow.aggregate.abmil_table import task_average

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
    from magflow.aggregate.slide_record import read_record
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
