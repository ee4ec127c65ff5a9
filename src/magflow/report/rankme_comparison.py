"""The `rankme_comparison` step: every model's RankMe profile on one chart, a run's control dashed beside it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from magflow.embed.control import control_of
from magflow.plotting import plt, save
from magflow.evaluate.record import read_record
from magflow.report.figures import (CONTROL_LABEL, control_line, mpp_axis, profile_line, rankme_label, rankme_points,
                                    skipped_figure)


def plot_rankme_comparison(records: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Every model's RankMe profile on one chart; a run's control (``{run}~init``) dashed in the run's colour."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    all_mpps: set[float] = set()
    paired = {model for model in records if control_of(model) in records}
    colours = {model: f"C{i % 10}" for i, model in enumerate(m for m in records if m not in paired)}
    labelled = False
    for model, record in records.items():
        if record["status"] != "ok":
            continue
        mpps, values = rankme_points(record)
        all_mpps |= set(mpps)
        if model in paired:
            control_line(ax, mpps, values, colours[str(control_of(model))], None if labelled else
                         "dashed: " + CONTROL_LABEL)
            labelled = True
        else:
            profile_line(ax, mpps, values, model, colours[model])
    if not all_mpps:
        plt.close(fig)
        return skipped_figure({"reason": "no model has a RankMe profile"}, path, "RankMe profiles")
    mpp_axis(ax, sorted(all_mpps))
    ax.set_ylabel(" / ".join(sorted({rankme_label(r) for r in records.values() if r["status"] == "ok"})))
    ax.set_title("RankMe profiles of all models", fontsize=10)
    ax.legend(fontsize=6, loc="best")
    save(fig, path)


def plot_rankme_comparison_files(paths: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]) -> None:
    """:func:`plot_rankme_comparison` of the RankMe records at ``paths`` (named by their models)."""
    records = [read_record(p) for p in paths]
    plot_rankme_comparison({r["model"]: r for r in records}, path)
