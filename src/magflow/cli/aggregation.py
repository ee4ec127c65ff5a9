"""The region aggregation verbs: region sequences, the mixing encoder, AB-MIL and its table."""

from __future__ import annotations

import argparse
import json

from magflow.cli.common import add_device, add_mean_patch, add_table_outputs, add_verb, wrote
from magflow.cli.embedding import _add_encoder_arguments, _encoder_source
from magflow.defaults import default
from magflow.errors import ConfigError


def _region_embed(args: argparse.Namespace) -> int:
    from magflow.aggregate.region_embed import build_slide_regions

    model = _encoder_source(args)
    counts = build_slide_regions(args.store, args.out, model, name=args.name, t=args.t, scales=args.scales,
                                 batch_size=args.batch_size, mean_patch=args.mean_patch, device=args.device)
    return wrote(args.out, before=f"{counts['n_regions']} regions of {counts['n_tokens']} tokens "
                                  f"({counts['missing_tokens']} background tokens masked)")


def _pretrain_mixer(args: argparse.Namespace) -> int:
    from magflow.aggregate.pretrain_mixer import MixerTrainConfig, train_mixer

    config = MixerTrainConfig.from_dict(json.loads(args.settings))
    result = train_mixer(config, args.regions, args.out_dir, stop_at=args.stop_at, device=args.device)
    return wrote(args.out_dir, before=f"mixer ({config.objective}): {result.iteration}/{config.iterations} iterations")


def _abmil(args: argparse.Namespace) -> int:
    from magflow.aggregate.abmil import run_abmil_tasks
    from magflow.aggregate.methods import SlideMethod
    from magflow.sheet import read_sheet

    tasks = list(dict.fromkeys(args.tasks))
    if len(tasks) > 1 and "{task}" not in args.out:
        raise ConfigError(f"magflow abmil: --out {args.out} must hold {{task}} when several --tasks are given "
                          "(one record per task), e.g. results/abmil/MODEL/METHOD/{task}.json")
    scales = tuple(args.scales or ())
    if args.mixer_dir:
        method = SlideMethod(args.method, args.label or args.method, "mixer", args.mode, mixer=args.mixer_dir)
    elif args.random_mixer:  # --scales: the one (or few) magnifications the random mixer sees
        method = SlideMethod(args.method, args.label or args.method, "random", args.mode, scales=scales)
    else:
        method = SlideMethod(args.method, args.label or args.method, "tiles", "tiles", scales=scales)
        if not method.scales:
            raise ConfigError("magflow abmil: give --mixer-dir, --random-mixer, or --scales for a tile baseline")
    if args.mixer_dir and scales:
        raise ConfigError("magflow abmil: --scales goes with --random-mixer or a tile baseline, not --mixer-dir")
    entries = read_sheet(args.sheet, extra_columns=tasks)
    outs = {task: args.out.replace("{task}", task) for task in tasks}
    records = run_abmil_tasks(method, args.regions, {t: {e.slide_id: e.value(t) for e in entries} for t in tasks},
                              outs, mil=json.loads(args.settings), groups={e.slide_id: e.group for e in entries},
                              sheet_splits={e.slide_id: e.split for e in entries} if args.sheet_splits else None,
                              mixer_dir=args.mixer_dir, mixer_train=json.loads(args.mixer_settings),
                              device=args.device)
    for task, record in records.items():
        auroc = record.get("auroc") or {}
        summary = (f"AUROC {auroc.get('mean')} ± {auroc.get('std')} over {auroc.get('n')} seed(s)"
                   if record.get("status", "ok") == "ok" else f"skipped: {record.get('reason')}")
        wrote(outs[task], before=f"{record['method']} [{task}]: {summary}")
    return 0


def _abmil_table(args: argparse.Namespace) -> int:
    from magflow.aggregate.abmil_table import abmil_table

    abmil_table(args.records, args.out_tsv, args.out_html, args.out_design)
    return wrote(args.out_tsv, args.out_html, args.out_design or None)


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "region-embed", _region_embed,
                 "embed a slide's region tile store and write its region sequences (HDF5)")
    p.add_argument("store", help="the slide's store of the region tile set (every tissue tile, no caps)")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/regions/MODEL/SLIDE.h5")
    _add_encoder_arguments(p)
    p.add_argument("--t", type=int, default=default("aggregate.t"),
                   help="region side in coarsest tiles (t=3 over 3 scales: 189 tokens)")
    p.add_argument("--scales", type=float, nargs="+", default=[2.0, 1.0, 0.5], help="token scales (mpp)")
    p.add_argument("--batch-size", type=int, default=default("aggregate.batch_size"))
    add_mean_patch(p)
    add_device(p)

    p = add_verb(steps, "pretrain-mixer", _pretrain_mixer,
                 "pretrain a mixing encoder with MEM or CMEM on region files (resumable)")
    p.add_argument("regions", nargs="+", help="region files of one encoder, e.g. results/regions/MODEL/*.h5")
    p.add_argument("--out-dir", required=True, help="checkpoint, history.tsv, mixer_encoder.safetensors, card")
    p.add_argument("--settings", default="{}", help='MixerTrainConfig fields as JSON, e.g. \'{"objective": "cmem"}\'')
    p.add_argument("--stop-at", type=int, help="stop (checkpointed) at this iteration; rerun to resume")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")

    p = add_verb(steps, "abmil", _abmil, "AB-MIL on slide sheet label columns over region files: AUROC over seeds "
                                         "(one JSON record per task)")
    p.add_argument("regions", nargs="+", help="region files, e.g. results/regions/MODEL/*.h5")
    p.add_argument("--sheet", required=True, help="the slide sheet: group, split and the task columns")
    p.add_argument("--tasks", nargs="+", default=default("aggregate.tasks"), help="sheet columns, one AB-MIL task each "
                   "(aggregate.tasks; default: label)")
    p.add_argument("--out", required=True, help="output JSON record; with several --tasks a pattern with {task}")
    p.add_argument("--method", default="abmil", help="method id recorded")
    p.add_argument("--label", help="the table row name (default: the method id)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--mixer-dir", help="a pretrained mixer's directory (fine-tuned after a frozen epoch)")
    kind.add_argument("--random-mixer", action="store_true", help="a randomly initialised mixer (of --scales only, "
                      "if given: e.g. --scales 1.0 is the Random 10× row)")
    p.add_argument("--scales", type=float, nargs="+", help="tile baseline: pool these scales (mpp); with "
                   "--random-mixer: the scales the mixer sees")
    p.add_argument("--mode", choices=["cls", "patch"], default="cls", help="mixer outputs pooled")
    p.add_argument("--settings", default="{}", help="MILConfig fields as JSON, e.g. '{\"lr\": 1e-4}'")
    p.add_argument("--mixer-settings", default="{}", help="MixerTrainConfig fields of the random mixer (JSON)")
    p.add_argument("--sheet-splits", action="store_true", help="use the sheet's split column for every seed")
    p.add_argument("--device", default="cpu")

    p = add_verb(steps, "abmil-table", _abmil_table,
                 "the slide-level AUROC table of AB-MIL records and the design figure")
    p.add_argument("records", nargs="+", help="AB-MIL records, in row order, e.g. results/abmil/MODEL/*/*.json")
    add_table_outputs(p)
    p.add_argument("--out-design", help="the design-decision figure (PNG)")
