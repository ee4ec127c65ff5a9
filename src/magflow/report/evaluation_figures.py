"""One model's figures and tables, from its metric records (``results/eval/{model}/``) and embeddings.

``write_model_report`` writes into ``out_dir``: the PNGs of :data:`FIGURES`, the tables as TSVs
(:data:`TABLE_FILES`, what ``index.html`` shows) and as one page, ``tables.html``. A run's
RankMe profile and probe curves also draw its control's records (``control_dir``, the records of
``{run}~init``: the same network at initialisation), when it was evaluated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from magflow.evaluate.data import EvalData
from magflow.evaluate.record import read_record
from magflow.evaluate.registry import METRIC_NAMES
from magflow.evaluate.settings import EvalSettings
from magflow.pages import write_page
from magflow.report.figures import plot_centroids, plot_cross_mpp, plot_probe_curves, plot_rankme_profile
from magflow.report.names import FIGURES, TABLE_FILES, TABLES
from magflow.report.pca import plot_hierarchy_pca
from magflow.report.segmentation_figure import plot_segmentation_examples
from magflow.report.tables import model_table, model_tables
from magflow.tsv import write_tsv

SEGMENTATION_MAPS = "segmentation"  # the maps folder inside the model's eval folder


def model_card(embeddings: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The model card the embeddings file carries (its root attribute), or None."""
    with h5py.File(embeddings, "r") as h5:
        card = h5.attrs.get("model_card")
    try:
        card = json.loads(card) if isinstance(card, (str, bytes)) else card
    except json.JSONDecodeError:
        return None
    return card if isinstance(card, dict) else None


def model_sampler(embeddings: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sampler record of a magflow run's model card (with ``grid`` and ``I``); None for a baseline."""
    sampler = (model_card(embeddings) or {}).get("sampler")
    return sampler if isinstance(sampler, dict) else None


def read_records(eval_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The metric records present in ``eval_dir``, in the order of ``METRIC_NAMES``."""
    folder = Path(eval_dir)
    return {m: read_record(folder / f"{m}.json") for m in METRIC_NAMES if (folder / f"{m}.json").is_file()}


def write_model_report(eval_dir: str | os.PathLike[str], embeddings: str | os.PathLike[str],
                       out_dir: str | os.PathLike[str], settings: EvalSettings | Mapping[str, Any] | None = None,
                       control_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Every figure of :data:`FIGURES`, table of :data:`TABLE_FILES` and the tables page; ``settings``: the
    config's ``evaluate`` block;
    ``control_dir``: the eval folder of the model's control, whose RankMe, probe and robustness records are
    shown too."""
    if not isinstance(settings, EvalSettings):
        settings = EvalSettings.from_config(settings)
    records = read_records(eval_dir)
    missing = [m for m in METRIC_NAMES if m not in records]
    if missing:
        raise FileNotFoundError(f"{eval_dir}: no record for {', '.join(missing)}; run the evaluation first")
    out = Path(out_dir)
    paths = {key: out / name for key, name in FIGURES.items()}
    control = read_records(control_dir) if control_dir is not None else {}
    plot_rankme_profile(records["rankme"], paths["rankme"], model_sampler(embeddings), control.get("rankme"))
    plot_probe_curves(records["probes"], paths["probes"], control.get("probes"))
    plot_cross_mpp(records["cross_mpp"], paths["cross_mpp"])
    plot_centroids(records["centroids"], paths["centroids"])
    plot_hierarchy_pca(EvalData.read(embeddings), paths["pca"], settings.coarse_mpp, settings.fine_mpp)
    plot_segmentation_examples(records["segmentation"], Path(eval_dir) / SEGMENTATION_MAPS, paths["segmentation"])
    tables = model_tables(records, control)
    for key, rows in tables.items():
        paths[key] = out / TABLE_FILES[key]
        write_tsv(paths[key], rows)
    paths["tables"] = out / TABLES
    write_page(paths["tables"], f"magflow - {records['rankme']['model']}",
               *(model_table(key, rows) for key, rows in tables.items()))
    return paths
