"""Evaluate one model's embeddings file for one metric family and write its record.

``evaluate_metric("probes", "results/embeddings/m/eval.h5", "results/eval/m/probes.json", sheet_splits=...)``
reads the file, computes the metric (its function in ``magflow.evaluate.registry``) and writes the
record (see ``magflow.evaluate.record``). A metric that cannot be computed on this file (no labels,
too few slides for a split, a missing mpp) writes a record with status ``skipped`` and the reason
instead of failing the job.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

from magflow.evaluate.data import EvalData
from magflow.evaluate.record import MetricSkipped, make_record, write_record
from magflow.evaluate.registry import family, metric_function
from magflow.evaluate.settings import EvalContext, EvalSettings

log = logging.getLogger(__name__)


def metric_protocol(metric: str, settings: EvalSettings) -> str:
    """The protocol a record of ``metric`` was computed under: ``evaluate.protocol`` for the probes, which
    it switches; ``magflow`` for every other family, which no protocol setting changes."""
    return settings.protocol if family(metric).protocol else "magflow"


def evaluate_metric(metric: str, embeddings: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    settings: EvalSettings | Mapping[str, Any] | None = None,
                    sheet_splits: Mapping[str, str] | None = None, groups: Mapping[str, str | None] | None = None,
                    masks: Mapping[str, str | os.PathLike[str]] | None = None,
                    maps_dir: str | os.PathLike[str] | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compute ``metric`` on ``embeddings`` and write its record to ``out``; return the record.

    ``settings``: the config's ``evaluate`` block; ``sheet_splits`` and ``groups``: slide id → the sheet's
    split and group; ``masks``: slide id → label mask (segmentation); ``maps_dir``: where a family that
    reads the masks writes its maps; ``config``: the whole run config, recorded as provenance.
    """
    compute = metric_function(metric)
    if not isinstance(settings, EvalSettings):
        settings = EvalSettings.from_config(settings)
    context = EvalContext(settings, dict(sheet_splits or {}), dict(groups or {}), dict(masks or {}), maps_dir,
                          config)
    if family(metric).masks and maps_dir is not None:
        os.makedirs(maps_dir, exist_ok=True)  # the maps folder exists even when nothing is painted
    data = EvalData.read(embeddings)
    log.info("%s: %s on %d tiles at %s mpp", data.model, metric, data.n, [f"{m:g}" for m in data.mpps])
    try:
        with warnings.catch_warnings():  # small test splits often miss a predicted class: expected, not news
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            outcome = compute(data, context)
        record = make_record(metric, data, outcome.result, seeds=outcome.seeds, constants=outcome.constants,
                             config=context.config, protocol=metric_protocol(metric, settings))
    except MetricSkipped as skip:
        log.warning("%s: %s skipped: %s", data.model, metric, skip)
        record = make_record(metric, data, reason=str(skip), config=context.config,
                             protocol=metric_protocol(metric, settings))
    for key, reason in (record["result"].get("left_out") or {}).items():
        log.info("%s: %s leaves out %s mpp: %s", data.model, metric, key, reason)
    write_record(out, record)
    return record
