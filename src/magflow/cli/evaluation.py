"""The evaluation verbs: the metric records of an embeddings file, and the MAD paper's evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from magflow.cli.common import add_device, add_mean_patch, add_pairs, add_verb, pairs, wrote
from magflow.cli.embedding import _add_encoder_arguments, _add_init_control, _encoder_or_control
from magflow.defaults import default
from magflow.evaluate.registry import METRIC_NAMES


def _evaluate(args: argparse.Namespace) -> int:
    from magflow.evaluate.evaluate import evaluate_metric
    from magflow.sheet import read_sheet

    entries = read_sheet(args.sheet) if args.sheet else []
    out = Path(args.out_dir)
    for metric in args.metrics or METRIC_NAMES:
        record = evaluate_metric(metric, args.embeddings, out / f"{metric}.json", settings=json.loads(args.settings),
                                 sheet_splits={e.slide_id: e.split for e in entries},
                                 groups={e.slide_id: e.group for e in entries},
                                 masks=pairs(args.masks, "--masks"), maps_dir=out / "segmentation")
        wrote(out / f"{metric}.json",
              before=f"{metric}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""))
    return 0


def _mad_embed(args: argparse.Namespace) -> int:
    from magflow.evaluate.mad_embed import embed_mad_tiles
    from magflow.sheet import read_sheet

    model = _encoder_or_control(args)
    splits = {e.slide_id: e.split for e in read_sheet(args.sheet)}
    tiles = embed_mad_tiles(args.stores, args.out, model, splits=splits, labels=pairs(args.masks, "--masks"),
                            name=args.name, batch_size=args.batch_size, mean_patch=args.mean_patch,
                            device=args.device)
    for mpp in tiles.mpps:
        scale = tiles.scales[mpp]
        print(f"{mpp:g} mpp: {len(scale.slides)} tiles, {int((scale.labels >= 0).sum())} labelled")
    return wrote(args.out)


def _mad_eval(args: argparse.Namespace) -> int:
    from magflow.evaluate.mad_eval import MadEvalSettings, evaluate_mad

    out = Path(args.out)
    record = evaluate_mad(args.tiles, out, masks=pairs(args.masks, "--masks"),
                          settings=MadEvalSettings.from_config(json.loads(args.settings)),
                          maps_dir=args.maps_dir or out.parent / "segmentation", pca=args.pca)
    for key in ("hierarchy", "table3", "table5"):
        section = record[key]
        print(f"{key}: {section['status']}" + (f" ({section['reason']})" if section.get("reason") else ""))
    return wrote(out, args.pca or None)


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "evaluate", _evaluate, "metric records of one embeddings file (RankMe, probes, cross-mpp, "
                                               "clustering, centroids, consistency, segmentation, robustness)")
    p.add_argument("embeddings", help="an embeddings file, e.g. results/embeddings/MODEL/eval.h5")
    p.add_argument("--out-dir", required=True, help="where the records go, e.g. results/eval/MODEL")
    p.add_argument("--metrics", nargs="+", choices=METRIC_NAMES, help="metric families (default: all)")
    p.add_argument("--sheet", help="the slide sheet: its split and group columns (evaluate.splits: sheet/auto)")
    add_pairs(p, "--masks", "label masks (with their JSON sidecars) of the slides segmentation is scored on")
    p.add_argument("--settings", default="{}", help='the config\'s evaluate block as JSON, e.g. \'{"splits": "sheet"}\'')

    p = add_verb(steps, "mad-embed", _mad_embed,
                 "embed every tile of every scale of the mad tile stores on their own grids "
                 "(one model), with tile labels and the sheet's splits")
    p.add_argument("stores", nargs="+", help="the mad tile stores of every slide, e.g. results/tiles/mad/*.h5")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/mad/MODEL/tiles.h5")
    _add_encoder_arguments(p)
    _add_init_control(p)
    p.add_argument("--sheet", required=True, help="the slide sheet: its split column (train / val / test)")
    add_pairs(p, "--masks", "label masks (with their JSON sidecars): a tile's label is the majority class under it")
    p.add_argument("--batch-size", type=int, default=default("embed.batch_size"))
    add_mean_patch(p)
    add_device(p)

    p = add_verb(steps, "mad-eval", _mad_eval, "the MAD paper's Tables 3, 4 (Δhier / Δsem) and 5 and its Fig 3 for one "
                                               "model's mad tile embeddings")
    p.add_argument("tiles", help="what mad-embed wrote, e.g. results/mad/MODEL/tiles.h5")
    p.add_argument("--out", required=True, help="the JSON record, e.g. results/mad/MODEL/mad.json")
    add_pairs(p, "--masks", "label masks of the test slides, the ground truth of Table 5")
    p.add_argument("--settings", default="{}", help='the config\'s evaluate.mad block as JSON, e.g. \'{"bootstrap": 200}\'')
    p.add_argument("--maps-dir", help="Table 5's label maps (default: segmentation/ beside --out)")
    p.add_argument("--pca", help="also draw Fig 3 (PNG), e.g. results/report/MODEL/mad_pca.png")
