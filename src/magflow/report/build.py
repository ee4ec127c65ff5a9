"""The whole evaluation report in one call (for the command line): per-model figures, comparison, index.

A model's control (``{model}~init``, the same network at initialisation) is drawn with it when its
records are in ``eval_root``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from magflow.embed.control import control_name
from magflow.report.rankme_comparison import plot_rankme_comparison_files
from magflow.report.report_index import write_index
from magflow.report.evaluation_figures import write_model_report

COMPARISON = "rankme_profiles.png"
INDEX = "index.html"


def build_report(models: Sequence[str], embeddings: Mapping[str, str | os.PathLike[str]],
                 eval_root: str | os.PathLike[str] = "results/eval", out_root: str | os.PathLike[str] = "results/report",
                 settings: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 manifests: Sequence[str | os.PathLike[str]] = (),
                 slide_table: str | os.PathLike[str] | None = None) -> Path:
    """Figures of every model (``{out_root}/{model}/``), the RankMe comparison and ``{out_root}/index.html``."""
    out = Path(out_root)
    for model in models:
        write_model_report(Path(eval_root) / model, embeddings[model], out / model, settings,
                           Path(eval_root) / control_name(model))
    controls = [Path(eval_root) / control_name(m) / "rankme.json" for m in models]
    plot_rankme_comparison_files([Path(eval_root) / m / "rankme.json" for m in models]
                                 + [p for p in controls if p.is_file()], out / COMPARISON)
    return write_index(out / INDEX, models, out / COMPARISON, eval_root=eval_root, figure_root=out, config=config,
                       manifests=manifests, slide_table=slide_table, embeddings=embeddings)
