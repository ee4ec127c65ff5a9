"""The `abmil` step: one method (a row of the AUROC table) on every task (its columns), over every seed.

A task is a column of the slide sheet (``aggregate.tasks``, default ``[label]``); its values are the
slide labels (strings; sorted to class indices), and slides without a value are left out of that task
only. One job computes every task of its method, so the region files are read and the method's
settings resolved once; each task gets its own record (``results/abmil/{model}/{method}/{task}.json``).

The slides are the region files of one encoder; their groups and the sheet's split come from the slide
sheet. Splits follow ``evaluate.splits`` as the tile metrics do (:func:`magflow.evaluate.splits.choose_splits`):
``seeded``, ``sheet``, or ``auto``: seeded when a task's slides allow it, else the sheet's split column; each
record's ``split_choice`` says which, and why.
Each seed builds a fresh model: a pretrained mixing encoder loaded again (training fine-tunes it in
place), a random one drawn from the seed (on one magnification's tokens, or all), or none for the tile
baselines. Every record names the method's kind and mode, its mixer and the mixer's pretraining loss,
the aggregator, the tasks, the seeds and the splits.

Each record (a cell of the AUROC table) is written atomically as strict JSON: ``method`` (the table row, e.g. "MEM r=0.5", "ABMIL all×"), ``task`` (the column),
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
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import torch

from magflow import provenance
from magflow.aggregate.abmil_model import SlideModel, build_slide_model
from magflow.aggregate.bags import SlideSet, load_slides
from magflow.aggregate.methods import SlideMethod
from magflow.aggregate.mixer import MixingEncoder
from magflow.aggregate.pretrain_mixer import CARD, MixerTrainConfig, load_mixer, mixer_loss_variant
from magflow.aggregate.slide_eval import MILConfig, evaluate_seeds, mil_splits, seeded_mil_splits
from magflow.errors import ConfigError
from magflow.evaluate.record import OK, SKIPPED, plain, write_record
from magflow.evaluate.splits import SlideSplit, choose_splits

log = logging.getLogger(__name__)


def _region_scales(path: str | os.PathLike[str]) -> tuple[list[float], int]:
    """The target mpps of a region file (coarsest first) and its feature width."""
    with h5py.File(path, "r") as regions:
        mpps = json.loads(regions.attrs["target_mpps"])
        return [float(m) for m in mpps], int(regions.attrs["feature_dim"])


def _slide_id(path: str | os.PathLike[str]) -> str:
    with h5py.File(path, "r") as regions:
        return str(regions.attrs["slide_id"])


def class_labels(labels: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Sheet labels (strings) to class indices in sorted order; slides without a label are not in the task."""
    given = {s: str(v) for s, v in labels.items() if v is not None and str(v).strip() not in ("", "nan")}
    names = sorted(set(given.values()))
    index = {name: i for i, name in enumerate(names)}
    return {s: index[v] for s, v in given.items()}, names


def task_splits(slides: SlideSet, config: MILConfig, setting: str,
                sheet_splits: Mapping[str, str] | None) -> tuple[Mapping[str, str] | None, dict[str, str]]:
    """``evaluate.splits`` on one task's slides: the sheet's splits to use (None: seeded splits) and the record's
    account of the choice. Under ``auto`` the sheet's split stands in only where it has a training slide; where
    neither works, the seeded splits' error skips the task."""
    try:
        choice = choose_splits(setting, lambda: seeded_mil_splits(slides, config))
    except ValueError:  # `seeded`, and the slides cannot be split: run_abmil records the task as skipped
        return None, {"setting": setting, "mode": "seeded", "note": ""}
    if choice.mode == "sheet" and setting == "auto" and not any(
            (sheet_splits or {}).get(s) == "train" for s in slides.ids):
        return None, {"setting": setting, "mode": "seeded",
                      "note": f"{choice.note}, but it has no training slide in this task"}
    return (sheet_splits if choice.mode == "sheet" else None), {"setting": setting, "mode": choice.mode,
                                                               "note": choice.note}


def mixer_description(method: SlideMethod, mixer_dir: str | os.PathLike[str] | None,
                      mixer_train: Mapping[str, Any] | None, mpps: Sequence[float]) -> dict[str, Any]:
    """What a record says of the method's mixer: kind, scales seen, objective and pretraining loss."""
    if method.kind == "tiles":
        return {"kind": "none", "pretraining_loss": None, "scales": list(method.scales)}
    seen = list(method.scales) if method.scales else list(mpps)
    if method.kind == "random":
        train = MixerTrainConfig.from_dict(dict(mixer_train or {}))
        return {"kind": "random", "pretraining_loss": "none (random init)", "objective": None, "scales": seen,
                "width": train.width, "depth": train.depth}
    card = json.loads((Path(str(mixer_dir)) / CARD).read_text())
    training = card.get("training", {})
    objective = str(card.get("objective", training.get("objective")))
    # cards written before the loss was an option were trained with SimCLR's NT-Xent, the only form then
    loss = card.get("pretraining_loss") or mixer_loss_variant(objective, training.get("contrastive_loss", "simclr"))
    return {"kind": "pretrained", "pretraining_loss": loss, "objective": objective, "scales": seen,
            "mask_ratio": training.get("mask_ratio"), "context": training.get("context"), "dir": str(mixer_dir)}


def run_abmil_tasks(method: SlideMethod, region_files: Sequence[str | os.PathLike[str]],
                    tasks: Mapping[str, Mapping[str, Any]], outs: Mapping[str, str | os.PathLike[str]], *,
                    mil: Mapping[str, Any], groups: Mapping[str, str | None] | None = None,
                    sheet_splits: Mapping[str, str] | None = None, split_mode: str | None = None,
                    mixer_dir: str | os.PathLike[str] | None = None, mixer_train: Mapping[str, Any] | None = None,
                    run_config: Mapping[str, Any] | None = None,
                    device: str | torch.device = "cpu") -> dict[str, dict[str, Any]]:
    """Evaluate ``method`` on each task (sheet column → {slide: label}); write each task's record to ``outs[task]``.

    ``split_mode`` is ``evaluate.splits`` (auto, seeded or sheet) over ``sheet_splits``, the sheet's split
    column (default ``sheet``); without ``sheet_splits``, seeded splits."""
    config = MILConfig.from_dict(dict(mil))
    setting = (split_mode or "sheet") if sheet_splits else "seeded"
    if not tasks:
        raise ConfigError("aggregate.tasks is empty; name at least one slide sheet column (e.g. [label])")
    missing_out = [t for t in tasks if t not in outs]
    if missing_out:
        raise ValueError(f"abmil: no output path for task(s) {missing_out}")
    if not region_files:
        raise ConfigError(f"abmil method {method.id}: no region files given")
    if method.kind == "mixer" and mixer_dir is None:
        raise ConfigError(f"abmil method {method.id}: a pretrained mixer's method needs the mixer's directory "
                          "(magflow abmil --mixer-dir)")
    mpps, feature_dim = _region_scales(region_files[0])
    missing = [m for m in method.scales if m not in mpps]
    if missing:
        raise ConfigError(f"abmil method {method.id}: scales {missing} are not in the region files ({mpps})")
    scale_ids = [mpps.index(m) for m in method.scales] if method.scales else None
    mixer = mixer_description(method, mixer_dir, mixer_train, mpps)
    ids = {path: _slide_id(path) for path in region_files}

    def build(n_classes: int) -> SlideModel:
        encoder: MixingEncoder | None = None
        if method.kind == "mixer" and mixer_dir is not None:  # checked above: a mixer method has its directory
            encoder = load_mixer(mixer_dir)
        elif method.kind == "random":
            # evaluate_seeds seeds torch before each build: a different random mixer per seed, reproducibly
            train = MixerTrainConfig.from_dict(dict(mixer_train or {}))
            encoder = MixingEncoder(train.mixer(feature_dim, len(mpps))).eval()
        return build_slide_model(method.mode, n_classes, encoder=encoder, token_dim=feature_dim, scales=scale_ids,
                                 hidden_dim=config.projection_dim, attn_dim=config.attn_dim, dropout=config.dropout,
                                 attention=config.attention)

    records = {}
    for task, labels in tasks.items():
        task_labels, class_names = class_labels(labels)
        files = [path for path in region_files if ids[path] in task_labels]
        if not files:
            raise ConfigError(f"abmil task {task!r}: none of the {len(region_files)} slides has a value in the slide "
                              f"sheet's `{task}` column; fill it or remove {task!r} from aggregate.tasks")
        slides, left_out = load_slides(files, task_labels, groups)
        unlabelled = sorted(set(ids.values()) - set(task_labels))
        left_out.update({s: f"no value in the sheet's `{task}` column" for s in unlabelled})
        log.info("abmil %s, task %s: %d slides, classes %s", method.label, task, len(slides), class_names)
        splits, split_choice = task_splits(slides, config, setting, sheet_splits)
        extra = {"method_id": method.id, "kind": method.kind, "mode": method.mode, "mixer": mixer,
                 "pretraining_loss": mixer["pretraining_loss"], "tasks": list(tasks), "classes": class_names,
                 "split_choice": split_choice}
        if len(class_names) < 2:
            reason = (f"task {task!r} has one class ({class_names}) among its slides; AB-MIL needs two: give the "
                      f"sheet's `{task}` column slides of another class")
            records[task] = skip_abmil(method.label, task, slides, config, outs[task], reason, n_classes=1,
                                       sheet_splits=splits, left_out=left_out, run_config=run_config,
                                       extra=extra)
            log.warning("abmil %s, task %s: skipped: %s", method.label, task, reason)
            continue
        records[task] = run_abmil(method.label, task, slides, lambda n=len(class_names): build(n), config,
                                  outs[task], n_classes=len(class_names), sheet_splits=splits,
                                  left_out=left_out, run_config=run_config, extra=extra, device=device)
        log.info("abmil %s, task %s: AUROC %s", method.label, task, records[task]["auroc"])
    return records


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
