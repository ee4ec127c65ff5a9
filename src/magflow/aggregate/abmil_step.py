"""The `abmil` step: one method (a row of the AUROC table) on the slide-label task, over every seed.

The slides are the region files of one encoder; their labels, groups and splits come from the slide
sheet. Each seed builds a fresh model: a pretrained mixing encoder loaded again (training fine-tunes
it in place), a random one drawn from the seed, or none for the tile baselines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import torch

from magflow.aggregate.bags import load_slides
from magflow.aggregate.methods import SlideMethod
from magflow.aggregate.mixer import MixingEncoder
from magflow.aggregate.pretrain_mixer import MixerTrainConfig, load_mixer
from magflow.aggregate.slide_eval import MILConfig
from magflow.aggregate.slide_model import SlideModel, build_slide_model
from magflow.aggregate.slide_record import run_abmil
from magflow.errors import ConfigError

log = logging.getLogger(__name__)
TASK = "slide label"


def _region_scales(path: str | os.PathLike[str]) -> tuple[list[float], int]:
    """The target mpps of a region file (coarsest first) and its feature width."""
    with h5py.File(path, "r") as regions:
        mpps = json.loads(regions.attrs["target_mpps"])
        return [float(m) for m in mpps], int(regions.attrs["feature_dim"])


def class_labels(labels: Mapping[str, str | None]) -> tuple[dict[str, int], list[str]]:
    """Sheet labels (strings) to class indices in sorted order; slides without a label are not in the task."""
    names = sorted({str(v) for v in labels.values() if v is not None and str(v) != ""})
    index = {name: i for i, name in enumerate(names)}
    return {s: index[str(v)] for s, v in labels.items() if v is not None and str(v) != ""}, names


def run_abmil_method(method: SlideMethod, region_files: Sequence[str | os.PathLike[str]],
                     labels: Mapping[str, str | None], out: str | os.PathLike[str], *,
                     mil: Mapping[str, Any], groups: Mapping[str, str | None] | None = None,
                     sheet_splits: Mapping[str, str] | None = None, mixer_dir: str | os.PathLike[str] | None = None,
                     mixer_train: Mapping[str, Any] | None = None, run_config: Mapping[str, Any] | None = None,
                     device: str | torch.device = "cpu") -> dict[str, Any]:
    """Evaluate ``method`` and write its record (see :mod:`magflow.aggregate.slide_record`) to ``out``."""
    config = MILConfig.from_dict(dict(mil))
    task_labels, class_names = class_labels(labels)
    files = []
    for path in region_files:
        with h5py.File(path, "r") as regions:
            if str(regions.attrs["slide_id"]) in task_labels:
                files.append(path)
    if not files:
        raise ConfigError(f"abmil: none of the {len(region_files)} slides has a label; fill the sheet's `label` column")
    slides, left_out = load_slides(files, task_labels, groups)
    mpps, feature_dim = _region_scales(files[0])

    def build() -> SlideModel:
        encoder: MixingEncoder | None = None
        if method.kind == "mixer":
            if mixer_dir is None:
                raise ConfigError(f"abmil method {method.id}: needs the mixer's directory")
            encoder = load_mixer(mixer_dir)
        elif method.kind == "random":
            # evaluate_seeds seeds torch before each build: a different random mixer per seed, reproducibly
            train = MixerTrainConfig.from_dict(dict(mixer_train or {}))
            encoder = MixingEncoder(train.mixer(feature_dim, len(mpps))).eval()
        scale_ids = [mpps.index(m) for m in method.scales] if method.kind == "tiles" else None
        return build_slide_model(method.mode, len(class_names), encoder=encoder, token_dim=feature_dim,
                                 scales=scale_ids, hidden_dim=config.hidden_dim, attn_dim=config.attn_dim,
                                 dropout=config.dropout)

    missing = [m for m in method.scales if m not in mpps]
    if missing:
        raise ConfigError(f"abmil method {method.id}: scales {missing} are not in the region files ({mpps})")
    log.info("abmil %s: %d slides, classes %s", method.label, len(slides), class_names)
    record = run_abmil(method.label, TASK, slides, build, config, out, n_classes=len(class_names),
                       sheet_splits=sheet_splits, left_out=left_out, run_config=run_config, device=device)
    log.info("abmil %s: AUROC %s", method.label, record["auroc"])
    return record


def write_table(records: Sequence[str | os.PathLike[str]], tsv: str | os.PathLike[str],
                html: str | os.PathLike[str]) -> Path:
    """The AUROC table of the records, in the order given (the table's row order)."""
    from magflow.aggregate.auroc_table import write_auroc_table
    from magflow.aggregate.slide_record import read_record

    write_auroc_table([read_record(path) for path in records], tsv, html,
                      title="Slide-level AB-MIL: AUROC on held-out slides (mean ± std over seeds)")
    return Path(html)
