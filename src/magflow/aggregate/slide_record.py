"""One AB-MIL record per method and task (a cell of the AUROC table), written atomically as strict JSON.

The record: ``method`` (the table row, e.g. "MEM r=0.5", "ABMIL all×"), ``task`` (the column),
``status`` (``ok`` or ``skipped``), ``reason`` (why skipped, else empty), ``n_slides``,
``n_classes``, ``left_out`` (slides left out of the task, with the reason), ``auroc`` (mean, std, n:
the seeds with a defined AUROC), ``per_seed`` (AUROC, reason, split sizes, kept epoch, loss history),
``config`` (the MILConfig used), ``aggregator`` (form, attention, hidden size, projection width,
groups per batch), ``seeds``, ``splits`` (where they come from and each seed's slides), whatever the
caller adds (``extra``: the method's kind and mode, its mixer and the mixer's pretraining loss, the
tasks of the run) and ``provenance``. NaN is written as ``null``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from magflow import provenance
from magflow.aggregate.bags import SlideSet
from magflow.aggregate.slide_eval import MILConfig, evaluate_seeds, mil_splits
from magflow.aggregate.slide_model import SlideModel
from magflow.errors import ConfigError
from magflow.evaluate.splits import SlideSplit
from magflow.evaluate.record import OK, SKIPPED, plain, read_record, write_record

__all__ = ["abmil_record", "read_record", "run_abmil", "skip_abmil"]


def describe_splits(splits: Sequence[SlideSplit], config: MILConfig, from_sheet: bool) -> dict[str, Any]:
    """Where a record's splits come from, and each seed's train / val / test slides."""
    source = ({"source": "sheet"} if from_sheet else
              {"source": "seeded", "test_fraction": config.test_fraction, "val_fraction": config.val_fraction})
    return {**source, "per_seed": {str(s.seed): {part: sorted(map(str, getattr(s, part)))
                                                 for part in ("train", "val", "test")} for s in splits}}


def abmil_record(method: str, task: str, slides: SlideSet, config: MILConfig, result: Mapping[str, Any] | None = None,
                 *, reason: str = "", n_classes: int, left_out: Mapping[str, str] | None = None,
                 run_config: Mapping[str, Any] | None = None, splits: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record envelope; status ``skipped`` when ``reason`` is given."""
    result = dict(result or {}) if not reason else {}
    return plain({
        **dict(extra or {}),
        "method": method, "task": task, "status": SKIPPED if reason else OK, "reason": reason,
        "n_slides": len(slides), "n_classes": n_classes, "left_out": dict(left_out or {}),
        "auroc": result.get("auroc", {"mean": None, "std": None, "n": 0}), "per_seed": result.get("per_seed", []),
        "config": dataclasses.asdict(config), "aggregator": config.aggregator_record(),
        "seeds": list(config.seeds), "splits": dict(splits or {}),
        "provenance": provenance.collect(config=run_config, seeds={f"seed{i}": s for i, s in enumerate(config.seeds)},
                                         precision="float32"),
    })


def run_abmil(method: str, task: str, slides: SlideSet, build_model: Callable[[], SlideModel], config: MILConfig,
              out: str | os.PathLike[str], *, n_classes: int, sheet_splits: Mapping[str, str] | None = None,
              left_out: Mapping[str, str] | None = None, run_config: Mapping[str, Any] | None = None,
              extra: Mapping[str, Any] | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Evaluate one method on one task over ``config.seeds`` and write its record to ``out``.

    A task whose slides cannot be split (too few slides or groups) is recorded as skipped with the
    reason, so the table shows the cell as not computed instead of the whole run failing. Training
    checkpoints to ``<out stem>.checkpoint.pt`` beside ``out`` (after each seed, and on SIGTERM or
    SIGUSR1), resumes from it when rerun, and removes it once the record is written.
    """
    try:
        splits = mil_splits(slides, config, sheet_splits)
    except ConfigError as error:
        record = abmil_record(method, task, slides, config, reason=str(error), n_classes=n_classes,
                              left_out=left_out, run_config=run_config,
                              splits=describe_splits([], config, bool(sheet_splits)), extra=extra)
    else:
        result = evaluate_seeds(slides, splits, build_model, config, device, checkpoint=checkpoint_path(out))
        record = abmil_record(method, task, slides, config, result, n_classes=n_classes, left_out=left_out,
                              run_config=run_config, splits=describe_splits(splits, config, bool(sheet_splits)),
                              extra=extra)
    write_record(Path(out), record)
    checkpoint_path(out).unlink(missing_ok=True)
    return record


def skip_abmil(method: str, task: str, slides: SlideSet, config: MILConfig, out: str | os.PathLike[str],
               reason: str, *, n_classes: int, sheet_splits: Mapping[str, str] | None = None,
               left_out: Mapping[str, str] | None = None, run_config: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the record of a task that cannot be evaluated (status ``skipped`` with ``reason``)."""
    record = abmil_record(method, task, slides, config, reason=reason, n_classes=n_classes, left_out=left_out,
                          run_config=run_config, splits=describe_splits([], config, bool(sheet_splits)), extra=extra)
    write_record(Path(out), record)
    return record


def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """Where the training of the record ``out`` checkpoints: ``results/abmil/m/x.json`` -> ``.../x.checkpoint.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.checkpoint.pt")
