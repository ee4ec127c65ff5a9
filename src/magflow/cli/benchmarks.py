"""The benchmark verbs: one model on a multi-magnification benchmark folder, its report, a synthetic folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from magflow.benchmark.config import FIXTURE_LAYOUTS, FIXTURE_SIZES
from magflow.benchmark.paths import LAYOUTS
from magflow.cli.common import add_device, add_mean_patch, add_verb, listed, wrote
from magflow.cli.embedding import _add_encoder_arguments, _encoder_source
from magflow.defaults import default

MPPS_HELP = f"mpps (default: {listed(default('benchmarks.<name>.mpps'))})"


def _benchmark(args: argparse.Namespace) -> int:
    from magflow.benchmark.config import BenchmarkSpec
    from magflow.benchmark.benchmark import run_benchmark

    root = Path(args.root)
    name = args.benchmark or root.resolve().name
    settings = {"layout": args.layout, "root": args.root, "labels": args.labels, "patients": args.patients,
                "mpps": args.mpps, "seed": args.seed}
    spec = BenchmarkSpec.from_config(name, {k: v for k, v in settings.items() if v is not None})
    model = _encoder_source(args)
    model_name = args.name or (Path(model).name if isinstance(model, str) else model.name)
    record = run_benchmark(spec, model, args.out_embeddings, args.out_record, name=model_name,
                           batch_size=args.batch_size, workers=args.workers, mean_patch=args.mean_patch,
                           device=args.device)
    print(f"{name} ({record['layout']}) x {model_name}: {record['counts']['images']} images at "
          f"{len(record['mpps'])} mpps, fed at {record['input_px']} px"
          + (f" (resized from {record['native_px']} px)" if record["resized"] else ""))
    print("mpp    kNN bal. acc.    linear bal. acc.   RankMe paper / covariance")
    for mpp in record["mpps"]:
        key = f"{mpp:g}"
        knn, linear = (record["probes"][p]["per_mpp"][key]["balanced_accuracy"] for p in ("knn", "linear"))
        print(f"{key:<6} {knn['mean']:.3f} ± {knn['std']:.3f}    {linear['mean']:.3f} ± {linear['std']:.3f}"
              f"      {record['rankme']['paper'][key]:.2f} / {record['rankme']['covariance'][key]:.2f}")
    robustness = record["robustness"]
    print("magnification robustness index: " + (f"{robustness['index']:.3f} (k = {robustness['k']})"
                                                if robustness["index"] is not None else robustness["reason"]))
    return wrote(args.out_embeddings, args.out_record)


def _benchmark_report(args: argparse.Namespace) -> int:
    from magflow.report.benchmark_report import write_benchmark_report

    rows = write_benchmark_report(args.records, args.out_figure, args.out_html, args.out_tsv, benchmark=args.benchmark)
    print(f"{len(rows)} rows; wrote {args.out_figure}, {args.out_html} and {args.out_tsv}")
    return 0


def _benchmark_fixture(args: argparse.Namespace) -> int:
    from magflow.benchmark.benchmark_fixture import write_fixture

    sizes = {k: v for k, v in {"n_slides": args.n_slides, "regions_per_slide": args.regions_per_slide,
                               "n_patients": args.n_patients, "rois_per_wsi": args.rois_per_wsi,
                               "tile_px": args.tile_px, "seed": args.seed}.items() if v is not None}
    sheet = write_fixture(args.layout, args.out_dir, **({"mpps": args.mpps} if args.mpps else {}), **sizes)
    print(f"wrote a synthetic {args.layout} benchmark folder {args.out_dir} (labels: {sheet})")
    return 0


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "benchmark", _benchmark,
                 "one model on one multi-magnification benchmark folder (TCGA-MS, BRACS-MS "
                 "or generic): embeddings, the cms probes, RankMe and the robustness index")
    p.add_argument("--layout", required=True, choices=LAYOUTS,
                   help="the benchmark folder's layout (config/README.md describes them)")
    p.add_argument("--root", required=True, help="the benchmark folder, the one holding the mpp folders")
    sheet = p.add_mutually_exclusive_group()
    sheet.add_argument("--labels", help="tcga-ms, generic: the label CSV (default: ROOT/labels.csv)")
    sheet.add_argument("--patients", help="bracs-ms: the WSI -> patient sheet (default: ROOT/BRACS.xlsx)")
    p.add_argument("--mpps", type=float, nargs="+", help=MPPS_HELP)
    p.add_argument("--seed", type=int, help="seed of the folds magflow makes (bracs-ms; generic without folds)")
    p.add_argument("--benchmark", help="benchmark name recorded (default: the root folder's name)")
    _add_encoder_arguments(p)
    p.add_argument("--out-embeddings", required=True, help="output HDF5, e.g. results/benchmarks/BENCH/MODEL.h5")
    p.add_argument("--out-record", required=True, help="output JSON, e.g. results/benchmarks/BENCH/MODEL.json")
    p.add_argument("--batch-size", type=int, default=default("embed.batch_size"))
    p.add_argument("--workers", type=int, default=default("embed.workers"),
                   help="data loader worker processes decoding the PNGs")
    add_mean_patch(p)
    add_device(p)

    p = add_verb(steps, "benchmark-report", _benchmark_report,
                 "one benchmark's panel (PNG) and table (HTML, TSV) from its records")
    p.add_argument("records", nargs="+", help="the benchmark's records, e.g. results/benchmarks/BENCH/*.json")
    p.add_argument("--benchmark", help="the benchmark's name (default: from the records)")
    p.add_argument("--out-figure", required=True)
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-tsv", required=True)

    p = add_verb(steps, "benchmark-fixture", _benchmark_fixture,
                 "write a small synthetic benchmark folder in the tcga-ms or "
                 "bracs-ms layout, cut from phantom slides (as the demo's)")
    p.add_argument("out_dir", help="the benchmark folder to write (the mpp folders and the label file go in it)")
    p.add_argument("--layout", required=True, choices=FIXTURE_LAYOUTS)
    p.add_argument("--mpps", type=float, nargs="+", help=MPPS_HELP)
    p.add_argument("--tile-px", type=int, help="image size in px (default: the demo's, "
                                               f"{FIXTURE_SIZES['tcga-ms']['tile_px']}; the benchmarks' is 224)")
    p.add_argument("--n-slides", type=int, help=f"tcga-ms: slides (default {FIXTURE_SIZES['tcga-ms']['n_slides']})")
    p.add_argument("--regions-per-slide", type=int,
                   help=f"tcga-ms: regions per slide (default {FIXTURE_SIZES['tcga-ms']['regions_per_slide']})")
    p.add_argument("--n-patients", type=int,
                   help=f"bracs-ms: patients (default {FIXTURE_SIZES['bracs-ms']['n_patients']})")
    p.add_argument("--rois-per-wsi", type=int,
                   help=f"bracs-ms: regions per slide (default {FIXTURE_SIZES['bracs-ms']['rois_per_wsi']})")
    p.add_argument("--seed", type=int, help="seed of the phantoms and the regions (default 0)")
