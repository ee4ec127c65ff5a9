"""The `magflow` command line: each pipeline step, callable outside Snakemake."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from magflow import __version__
from magflow.benchmark.config import FIXTURE_LAYOUTS, FIXTURE_SIZES
from magflow.benchmark.paths import LAYOUTS
from magflow.defaults import default
from magflow.embed.control import InitControl
from magflow.embed.external import FEATURES, ExternalModel
from magflow.errors import ConfigError, MagflowError
from magflow.evaluate.registry import METRIC_NAMES

Handler = Callable[[argparse.Namespace], int]


def _phantom(args: argparse.Namespace) -> int:
    from magflow.phantom.slide import PhantomSpec, write_phantom

    label = args.label if args.cross_scale is None else args.cross_scale  # the rare class is present iff it is 1
    if args.cross_scale is not None and args.label not in (None, args.cross_scale):
        raise ConfigError(f"magflow phantom: --label {args.label} contradicts --cross-scale {args.cross_scale}; the "
                          "planted label sets it (large cells in nests are present iff --cross-scale is 1)")
    spec = PhantomSpec(width_um=args.width_um, height_um=args.height_um, mpp=args.mpp, seed=args.seed,
                       label=label or 0, tissue=not args.no_tissue, write_mpp=not args.no_mpp,
                       cross_scale=args.cross_scale)
    out = Path(args.out_dir)
    meta = write_phantom(spec, out / f"{args.slide_id}.tiff", out / f"{args.slide_id}.labels.png",
                         out / f"{args.slide_id}.json")
    print(json.dumps({k: meta[k] for k in ("slide_label", "cross_scale", "class_fractions") if k in meta}, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    from magflow.slides.reader import Slide

    with Slide(args.slide, args.slide_id, args.mpp) as slide:
        print(json.dumps(slide.describe(), indent=2))
    return 0


def _tissue_mask(args: argparse.Namespace) -> int:
    from magflow.preprocess.tissue import TissueParams
    from magflow.preprocess.tissue_mask import make_tissue_mask

    slide_id = args.slide_id or Path(args.slide).stem
    params = TissueParams(mpp=args.tissue_mpp, min_saturation=args.min_saturation)
    result = make_tissue_mask(args.slide, slide_id, args.out_mask, args.out_qc, params, args.mpp,
                              brightfield_check=not args.no_brightfield_check)
    if result.refused:
        print(f"magflow tissue-mask: error: {result.refused} (With this command: --no-brightfield-check.)",
              file=sys.stderr)
        return 2
    print(f"{slide_id}: tissue fraction {result.tissue_fraction:.3f}"
          + (f" (WARNING: {'; '.join(result.warnings)})" if result.warnings else ""))
    return 0


def _extract_tiles(args: argparse.Namespace) -> int:
    from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles

    slide_id = args.slide_id or Path(args.slide).stem
    params = TileSetParams(args.tileset, args.scales, args.cell_px, args.source_px, args.min_tissue,
                           args.max_tiles, args.seed, args.nested, args.jpeg_quality)
    result = extract_tiles(args.slide, slide_id, args.mask, args.out, params, args.mpp, workers=args.workers)
    for scale, count in result["counts"].items():
        print(f"{slide_id} {scale} mpp (achieved {count['achieved_mpp']:.4g}): "
              f"{count['kept']} kept of {count['available']}")
    for scale in result["skipped"]:
        print(f"{slide_id} {scale:g} mpp: skipped (finer than the slide; no upsampling)")
    if result["empty_reason"]:
        print(f"{slide_id}: empty store: {result['empty_reason']}")
    return 0


def _optimize_sampler(args: argparse.Namespace) -> int:
    from magflow.sampling import SamplerConfig
    from magflow.sampling.optimize_sampler import optimize_sampler

    config = SamplerConfig(strategy=args.strategy, kernel=args.kernel, lam=args.lam, mpp=args.mpp,
                           lo=args.range[0], hi=args.range[1], grid_step=args.grid_step)
    sampler = optimize_sampler(config, args.out)
    print(f"{args.strategy} ({args.kernel}): min I = {sampler.min_quality:.4f}, mean I = "
          f"{sampler.mean_quality:.4f}; wrote {args.out}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from magflow.embed import PROFILE_MPPS, embed_tileset

    model = _encoder_source(args)
    if args.init_control:
        if not args.model_dir:
            raise ConfigError("--init-control embeds a run's initialisation: give the run with --model-dir")
        model = InitControl(args.model_dir)
    labels = {}
    for item in args.labels:
        slide_id, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--labels takes SLIDE_ID=PATH, got '{item}'")
        labels[slide_id] = path
    summary = embed_tileset(args.stores, args.out, model, name=args.name, mpps=args.mpps or PROFILE_MPPS,
                            anchor_mpp=args.anchor_mpp, resample=args.resample, mean_patch=args.mean_patch,
                            labels=labels, label_csv=args.label_csv, batch_size=args.batch_size,
                            workers=args.workers, device=args.device)
    for mpp, count in summary["counts"].items():
        print(f"{mpp} mpp: {count['valid']} tiles embedded, {count['skipped']} skipped")
    print(f"{summary['tiles']} tiles, {summary['complete']} at every mpp ({summary['precision']}); wrote {args.out}")
    return 0


def _mad_embed(args: argparse.Namespace) -> int:
    from magflow.evaluate.mad_embed import embed_mad_tiles
    from magflow.sheet import read_sheet

    model = _encoder_source(args)
    if args.init_control:
        if not args.model_dir:
            raise ConfigError("--init-control embeds a run's initialisation: give the run with --model-dir")
        model = InitControl(args.model_dir)
    splits = {e.slide_id: e.split for e in read_sheet(args.sheet)}
    tiles = embed_mad_tiles(args.stores, args.out, model, splits=splits, labels=_pairs(args.masks, "--masks"),
                            name=args.name, batch_size=args.batch_size, device=args.device)
    for mpp in tiles.mpps:
        scale = tiles.scales[mpp]
        print(f"{mpp:g} mpp: {len(scale.slides)} tiles, {int((scale.labels >= 0).sum())} labelled")
    print(f"wrote {args.out}")
    return 0


def _mad_eval(args: argparse.Namespace) -> int:
    from magflow.evaluate.mad_eval import MadEvalSettings, evaluate_mad

    out = Path(args.out)
    record = evaluate_mad(args.tiles, out, masks=_pairs(args.masks, "--masks"),
                          settings=MadEvalSettings.from_config(json.loads(args.settings)),
                          maps_dir=args.maps_dir or out.parent / "segmentation", pca=args.pca)
    for key in ("hierarchy", "table3", "table5"):
        section = record[key]
        print(f"{key}: {section['status']}" + (f" ({section['reason']})" if section.get("reason") else ""))
    print(f"wrote {out}" + (f" and {args.pca}" if args.pca else ""))
    return 0


def _mad_report(args: argparse.Namespace) -> int:
    from magflow.report.mad_report import write_mad_tables

    html = write_mad_tables(_pairs(args.records, "records"), args.out_tsv, args.out_html,
                            table3_tsv=args.table3_tsv, table5_tsv=args.table5_tsv)
    print(f"wrote {html} and {args.out_tsv}")
    return 0


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
    print(f"wrote {args.out_embeddings} and {args.out_record}")
    return 0


def _benchmark_fixture(args: argparse.Namespace) -> int:
    from magflow.benchmark.benchmark_fixture import write_fixture

    sizes = {k: v for k, v in {"n_slides": args.n_slides, "regions_per_slide": args.regions_per_slide,
                               "n_patients": args.n_patients, "rois_per_wsi": args.rois_per_wsi,
                               "tile_px": args.tile_px, "seed": args.seed}.items() if v is not None}
    sheet = write_fixture(args.layout, args.out_dir, **({"mpps": args.mpps} if args.mpps else {}), **sizes)
    print(f"wrote a synthetic {args.layout} benchmark folder {args.out_dir} (labels: {sheet})")
    return 0


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} takes SLIDE_ID=PATH, got '{item}'")
        out[key] = value
    return out


def _evaluate(args: argparse.Namespace) -> int:
    from magflow.evaluate.evaluate import evaluate_metric
    from magflow.sheet import read_sheet

    entries = read_sheet(args.sheet) if args.sheet else []
    out = Path(args.out_dir)
    for metric in args.metrics or METRIC_NAMES:
        record = evaluate_metric(metric, args.embeddings, out / f"{metric}.json", settings=json.loads(args.settings),
                                 sheet_splits={e.slide_id: e.split for e in entries},
                                 groups={e.slide_id: e.group for e in entries},
                                 masks=_pairs(args.masks, "--masks"), maps_dir=out / "segmentation")
        print(f"{metric}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else "")
              + f"; wrote {out / f'{metric}.json'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from magflow.report.build import build_report

    index = build_report(args.models, {m: Path(args.embeddings_root) / m / f"{args.tileset}.h5" for m in args.models},
                         args.eval_root, args.out_dir, json.loads(args.settings), manifests=args.manifests,
                         slide_table=args.slide_table)
    print(f"wrote {index}")
    return 0


def _export_timm(args: argparse.Namespace) -> int:
    from magflow.pretrain.export import export_timm_run

    folder = export_timm_run(args.run_dir)
    print(f"wrote {folder}: timm.create_model('local-dir:{folder}', pretrained=True) loads it")
    return 0


def _read(args: argparse.Namespace) -> int:
    from PIL import Image

    from magflow.atomic import atomic_path
    from magflow.slides.reader import Slide

    with Slide(args.slide, None, args.mpp) as slide:
        pixels, achieved = slide.read_region(args.x, args.y, args.size, args.size, args.target_mpp)
    with atomic_path(args.out) as tmp:
        Image.fromarray(pixels).save(tmp)
    print(f"wrote {args.out}: {args.size}x{args.size} px at {achieved:g} mpp")
    return 0


def _region_embed(args: argparse.Namespace) -> int:
    from magflow.aggregate.region_embed import build_slide_regions

    model = _encoder_source(args)
    counts = build_slide_regions(args.store, args.out, model, name=args.name, t=args.t, scales=args.scales,
                                 batch_size=args.batch_size, device=args.device)
    print(f"{counts['n_regions']} regions of {counts['n_tokens']} tokens ({counts['missing_tokens']} background "
          f"tokens masked); wrote {args.out}")
    return 0


def _pretrain_mixer(args: argparse.Namespace) -> int:
    from magflow.aggregate.pretrain_mixer import MixerTrainConfig, train_mixer

    config = MixerTrainConfig.from_dict(json.loads(args.settings))
    result = train_mixer(config, args.regions, args.out_dir, stop_at=args.stop_at, device=args.device)
    print(f"mixer ({config.objective}): {result.iteration}/{config.iterations} iterations; wrote {args.out_dir}")
    return 0


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
        print(f"{record['method']} [{task}]: {summary}; wrote {outs[task]}")
    return 0


def _slide_qc_table(args: argparse.Namespace) -> int:
    from magflow.report.slide_qc_table import write_slide_table

    write_slide_table(args.masks, args.out_tsv, args.out_html)
    print(f"wrote {args.out_tsv} and {args.out_html}")
    return 0


def _tile_manifest(args: argparse.Namespace) -> int:
    from magflow.preprocess.tile_manifest import write_manifest
    from magflow.sheet import read_sheet

    splits = {e.slide_id: e.split for e in read_sheet(args.sheet)} if args.sheet else {}
    rows = write_manifest(args.stores, splits, args.tileset, args.out_tsv, args.out_html)
    print(f"{len(rows)} rows; wrote {args.out_tsv} and {args.out_html}")
    return 0


def _plot_samplers(args: argparse.Namespace) -> int:
    from magflow.sampling.plot_samplers import plot_sampler_comparison

    plot_sampler_comparison(args.samplers, args.out)
    print(f"wrote {args.out}")
    return 0


def _evaluation_figures(args: argparse.Namespace) -> int:
    from magflow.report.evaluation_figures import write_model_report

    write_model_report(args.eval_dir, args.embeddings, args.out_dir, json.loads(args.settings), args.control_dir)
    print(f"wrote the figures and tables of {args.eval_dir} to {args.out_dir}")
    return 0


def _rankme_comparison(args: argparse.Namespace) -> int:
    from magflow.report.rankme_comparison import plot_rankme_comparison_files

    plot_rankme_comparison_files(args.records, args.out)
    print(f"wrote {args.out}")
    return 0


def _report_index(args: argparse.Namespace) -> int:
    import yaml

    from magflow.report.report_index import write_index

    config = yaml.safe_load(Path(args.config).read_text()) if args.config else None
    index = write_index(args.out, args.models, args.comparison, eval_root=args.eval_root, figure_root=args.figure_root,
                        config=config, manifests=args.manifests, slide_table=args.slide_table,
                        slide_level=args.slide_level, mad=args.mad,
                        embeddings=_pairs(args.embeddings, "--embeddings"))
    print(f"wrote {index}")
    return 0


def _abmil_table(args: argparse.Namespace) -> int:
    from magflow.aggregate.abmil_table import abmil_table

    abmil_table(args.records, args.out_tsv, args.out_html, args.out_design)
    print(f"wrote {args.out_tsv} and {args.out_html}" + (f" and {args.out_design}" if args.out_design else ""))
    return 0


def _benchmark_report(args: argparse.Namespace) -> int:
    from magflow.report.benchmark_report import write_benchmark_report

    rows = write_benchmark_report(args.records, args.out_figure, args.out_html, args.out_tsv, benchmark=args.benchmark)
    print(f"{len(rows)} rows; wrote {args.out_figure}, {args.out_html} and {args.out_tsv}")
    return 0


def _add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """The frozen encoder of `embed`, `region-embed`, `mad-embed` and `benchmark`: a run's directory, or an external model
    (magflow.embed.external: a timm name + weights, local-dir:, hf-hub: from the local cache, a release folder)."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a run's directory: teacher_backbone.safetensors + model_card.json")
    source.add_argument("--timm-name", help="an external model: a timm architecture with --weights, local-dir:FOLDER, "
                                            "or hf-hub:ORG/NAME read from the local cache only (never downloaded)")
    source.add_argument("--release", help="an authors' release folder: config.json (architecture, img_size) + "
                                          "NAME.safetensors")
    p.add_argument("--weights", help="with a timm architecture: the external model's local weights file")
    p.add_argument("--release-model", help="the release's NAME (NAME.safetensors), when it holds several")
    p.add_argument("--hf-cache", help="hf-hub: the Hugging Face cache folder (default: HF_HUB_CACHE, HF_HOME/hub)")
    p.add_argument("--img-size", type=int, help="the external model's input size (default: its own; 224 for a timm "
                                                "architecture)")
    p.add_argument("--timm-kwargs", default="{}", help='JSON keyword arguments for timm, e.g. \'{"init_values": 1e-5}\' '
                                                       'or \'{"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}\'')
    p.add_argument("--mean", type=float, nargs=3, help="the external model's normalisation mean (default: its "
                                                       "pretrained_cfg, else ImageNet)")
    p.add_argument("--std", type=float, nargs=3, help="the external model's normalisation std")
    p.add_argument("--feature", choices=FEATURES, help="the external model's feature: pooled (model(x), the "
                                                        "benchmark papers' protocol), cls or cls+mean_patch")
    p.add_argument("--name", help="model name recorded in the file (default: the directory or timm name)")


def _encoder_source(args: argparse.Namespace) -> str | ExternalModel:
    """What `_add_encoder_arguments` parsed: the run directory, or the external model's settings."""
    if args.model_dir:
        return args.model_dir
    settings = {"timm_name": args.timm_name, "weights": args.weights, "release": args.release,
                "release_model": args.release_model, "hf_cache": args.hf_cache, "img_size": args.img_size,
                "timm_kwargs": json.loads(args.timm_kwargs), "mean": args.mean, "std": args.std,
                "feature": args.feature}
    name = args.name or args.timm_name or Path(args.release).name
    return ExternalModel.from_config(name, {k: v for k, v in settings.items() if v is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"magflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    steps = parser.add_subparsers(dest="step", required=True)

    p = steps.add_parser("phantom", help="write a synthetic H&E-like phantom slide with ground truth")
    p.add_argument("out_dir")
    p.add_argument("--slide-id", default="phantom")
    p.add_argument("--seed", type=int, default=default("phantom.seed"))
    p.add_argument("--label", type=int, choices=(0, 1), help="1: the rare class is present (default 0)")
    p.add_argument("--cross-scale", type=int, choices=(0, 1), help="plant the cross-scale label (the sheet's "
                   "cross_scale column): 1 = large cells in nests + small cells in sheets, 0 = the reverse")
    p.add_argument("--width-um", type=float, default=float(default("phantom.width_um")))
    p.add_argument("--height-um", type=float, default=float(default("phantom.height_um")))
    p.add_argument("--mpp", type=float, default=default("phantom.mpp"), help="level-0 microns per pixel")
    p.add_argument("--no-tissue", action="store_true", help="glass only (for testing empty masks)")
    p.add_argument("--no-mpp", action="store_true", help="omit the mpp from the metadata")
    p.set_defaults(handler=_phantom)

    p = steps.add_parser("info", help="print a slide's levels, mpp and where the mpp came from")
    p.add_argument("slide")
    p.add_argument("--slide-id")
    p.add_argument("--mpp", type=float, help="level-0 mpp, as the sheet's `mpp` column (wins over metadata)")
    p.set_defaults(handler=_info)

    p = steps.add_parser("tissue-mask", help="compute a tissue mask and its QC picture")
    p.add_argument("slide")
    p.add_argument("--slide-id")
    p.add_argument("--out-mask", required=True, help="output HDF5 file")
    p.add_argument("--out-qc", required=True, help="output PNG file")
    p.add_argument("--mpp", type=float, help="level-0 mpp, as the sheet's `mpp` column")
    p.add_argument("--tissue-mpp", type=float, default=default("tissue.mpp"),
                   help="resolution of the mask (µm/px)")
    p.add_argument("--min-saturation", type=float, default=default("tissue.min_saturation"))
    p.add_argument("--no-brightfield-check", action="store_true",
                   help="accept a slide that does not look like a brightfield scan (the sheet's brightfield_check: off)")
    p.set_defaults(handler=_tissue_mask)

    p = steps.add_parser("slide-qc-table", help="one table (TSV and HTML) of the slides: mpp, its source, tissue")
    p.add_argument("masks", nargs="+", help="the slides' tissue masks, e.g. results/masks/*.h5")
    p.add_argument("--out-tsv", required=True, help="e.g. results/qc/slides.tsv")
    p.add_argument("--out-html", required=True, help="e.g. results/qc/slides.html")
    p.set_defaults(handler=_slide_qc_table)

    p = steps.add_parser("extract-tiles", help="extract a multi-scale tile store (HDF5) from a slide and its mask")
    p.add_argument("slide")
    p.add_argument("--mask", required=True, help="the slide's tissue mask (from `magflow tissue-mask`)")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--slide-id")
    p.add_argument("--tileset", default="train", help="name recorded in the store")
    p.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    p.add_argument("--cell-px", type=int, default=default("tilesets.<name>.cell_px"))
    p.add_argument("--source-px", type=int, default=default("tilesets.<name>.source_px"))
    p.add_argument("--min-tissue", type=float, default=default("tilesets.<name>.min_tissue"))
    p.add_argument("--max-tiles", type=int, help="cap per scale")
    p.add_argument("--seed", type=int, default=default("tilesets.<name>.seed"))
    p.add_argument("--nested", action="store_true", help="coarser scales keep exactly the ancestors of the kept finest cells")
    p.add_argument("--jpeg-quality", type=int, help="store tiles as JPEG of this quality (1-100); default raw pixels")
    p.add_argument("--workers", type=int, default=default("extract.workers"))
    p.add_argument("--mpp", type=float, help="level-0 mpp, as the sheet's `mpp` column")
    p.set_defaults(handler=_extract_tiles)

    p = steps.add_parser("tile-manifest", help="one tile set's manifest (TSV and HTML): tiles kept per slide and mpp")
    p.add_argument("stores", nargs="+", help="the tile set's stores, e.g. results/tiles/eval/*.h5")
    p.add_argument("--tileset", required=True, help="the tile set's name")
    p.add_argument("--sheet", help="the slide sheet, for its split column")
    p.add_argument("--out-tsv", required=True, help="e.g. results/tiles/eval/manifest.tsv")
    p.add_argument("--out-html", required=True, help="e.g. results/tiles/eval/manifest.html")
    p.set_defaults(handler=_tile_manifest)

    p = steps.add_parser("optimize-sampler", help="solve a magnification sampling distribution into a JSON record")
    p.add_argument("--strategy", required=True, help="single, du, cu, cu_maxavg or cu_minmax")
    p.add_argument("--kernel", default="abs", help="abs or area (or a registered kernel)")
    p.add_argument("--lam", type=float, help="λ of cu_maxavg (default 1.0)")
    p.add_argument("--mpp", type=float, help="the mpp of strategy single")
    p.add_argument("--range", type=float, nargs=2, default=default("samplers.range"), metavar=("LO", "HI"))
    p.add_argument("--grid-step", type=float, default=default("samplers.grid_step"))
    p.add_argument("--out", required=True, help="output JSON")
    p.set_defaults(handler=_optimize_sampler)

    p = steps.add_parser("plot-samplers", help="the strategy comparison figure of one kernel's sampler JSONs")
    p.add_argument("samplers", nargs="+", help="sampler JSONs, e.g. results/samplers/kernel~abs/*.json")
    p.add_argument("--out", required=True, help="output PNG")
    p.set_defaults(handler=_plot_samplers)

    p = steps.add_parser("embed", help="embed a tile set's stores at several mpps (a run's teacher or a timm model)")
    p.add_argument("stores", nargs="+", help="the tile stores of one tile set, e.g. results/tiles/eval/*.h5")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/embeddings/MODEL/eval.h5")
    _add_encoder_arguments(p)
    p.add_argument("--mpps", type=float, nargs="+", help="target mpps (default: 0.25 0.375 0.5 0.75 1 1.5 2)")
    p.add_argument("--anchor-mpp", type=float, help="the tiles' scale (default: the tile set's finest)")
    p.add_argument("--resample", choices=("finest", "nearest_scale"), default=default("embed.resample"),
                   help="finest: every view resized from the finest stored scale by one filter; nearest_scale: "
                        "each from the coarsest stored scale at or finer than its mpp")
    p.add_argument("--mean-patch", action="store_true", help="append the mean patch token to the CLS token")
    p.add_argument("--init-control", action="store_true",
                   help="embed the --model-dir run's network at initialisation (its control, named RUN~init)")
    p.add_argument("--labels", nargs="*", default=[], metavar="SLIDE_ID=PATH",
                   help="a slide's label mask (with its JSON sidecar) or tile-label CSV")
    p.add_argument("--label-csv", help="a tile-label CSV for many slides (slide_id, x, y or col, row, label)")
    p.add_argument("--batch-size", type=int, default=default("embed.batch_size"))
    p.add_argument("--workers", type=int, default=default("embed.workers"), help="data loader worker processes")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.set_defaults(handler=_embed)

    p = steps.add_parser("benchmark", help="one model on one multi-magnification benchmark folder (TCGA-MS, BRACS-MS "
                                           "or generic): embeddings, the cms probes, RankMe and the robustness index")
    p.add_argument("--layout", required=True, choices=LAYOUTS,
                   help="the benchmark folder's layout (config/README.md describes them)")
    p.add_argument("--root", required=True, help="the benchmark folder, the one holding the mpp folders")
    sheet = p.add_mutually_exclusive_group()
    sheet.add_argument("--labels", help="tcga-ms, generic: the label CSV (default: ROOT/labels.csv)")
    sheet.add_argument("--patients", help="bracs-ms: the WSI -> patient sheet (default: ROOT/BRACS.xlsx)")
    p.add_argument("--mpps", type=float, nargs="+", help="mpps (default: 0.25 0.375 0.5 0.75 1 1.5 2)")
    p.add_argument("--seed", type=int, help="seed of the folds magflow makes (bracs-ms; generic without folds)")
    p.add_argument("--benchmark", help="benchmark name recorded (default: the root folder's name)")
    _add_encoder_arguments(p)
    p.add_argument("--out-embeddings", required=True, help="output HDF5, e.g. results/benchmarks/BENCH/MODEL.h5")
    p.add_argument("--out-record", required=True, help="output JSON, e.g. results/benchmarks/BENCH/MODEL.json")
    p.add_argument("--batch-size", type=int, default=default("embed.batch_size"))
    p.add_argument("--workers", type=int, default=default("embed.workers"),
                   help="data loader worker processes decoding the PNGs")
    p.add_argument("--mean-patch", action="store_true", help="append the mean patch token to the CLS token "
                   "(embed.mean_patch), as the model's evaluation embeddings do")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.set_defaults(handler=_benchmark)

    p = steps.add_parser("benchmark-report", help="one benchmark's panel (PNG) and table (HTML, TSV) from its records")
    p.add_argument("records", nargs="+", help="the benchmark's records, e.g. results/benchmarks/BENCH/*.json")
    p.add_argument("--benchmark", help="the benchmark's name (default: from the records)")
    p.add_argument("--out-figure", required=True)
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-tsv", required=True)
    p.set_defaults(handler=_benchmark_report)

    p = steps.add_parser("benchmark-fixture", help="write a small synthetic benchmark folder in the tcga-ms or "
                                                   "bracs-ms layout, cut from phantom slides (as the demo's)")
    p.add_argument("out_dir", help="the benchmark folder to write (the mpp folders and the label file go in it)")
    p.add_argument("--layout", required=True, choices=FIXTURE_LAYOUTS)
    p.add_argument("--mpps", type=float, nargs="+", help="mpps (default: 0.25 0.375 0.5 0.75 1 1.5 2)")
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
    p.set_defaults(handler=_benchmark_fixture)

    p = steps.add_parser("evaluate", help="metric records of one embeddings file (RankMe, probes, cross-mpp, "
                                          "clustering, centroids, consistency, segmentation, robustness)")
    p.add_argument("embeddings", help="an embeddings file, e.g. results/embeddings/MODEL/eval.h5")
    p.add_argument("--out-dir", required=True, help="where the records go, e.g. results/eval/MODEL")
    p.add_argument("--metrics", nargs="+", choices=METRIC_NAMES, help="metric families (default: all)")
    p.add_argument("--sheet", help="the slide sheet: its split and group columns (evaluate.splits: sheet/auto)")
    p.add_argument("--masks", nargs="*", default=[], metavar="SLIDE_ID=PATH",
                   help="label masks (with their JSON sidecars) of the slides segmentation is scored on")
    p.add_argument("--settings", default="{}", help='the config\'s evaluate block as JSON, e.g. \'{"splits": "sheet"}\'')
    p.set_defaults(handler=_evaluate)

    p = steps.add_parser("mad-embed", help="embed every tile of every scale of the mad tile stores on their own grids "
                                           "(one model), with tile labels and the sheet's splits")
    p.add_argument("stores", nargs="+", help="the mad tile stores of every slide, e.g. results/tiles/mad/*.h5")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/mad/MODEL/tiles.h5")
    _add_encoder_arguments(p)
    p.add_argument("--init-control", action="store_true",
                   help="embed the --model-dir run's network at initialisation (its control, named RUN~init)")
    p.add_argument("--sheet", required=True, help="the slide sheet: its split column (train / val / test)")
    p.add_argument("--masks", nargs="*", default=[], metavar="SLIDE_ID=PATH",
                   help="label masks (with their JSON sidecars): a tile's label is the majority class under it")
    p.add_argument("--batch-size", type=int, default=default("embed.batch_size"))
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.set_defaults(handler=_mad_embed)

    p = steps.add_parser("mad-eval", help="the MAD paper's Tables 3, 4 (Δhier / Δsem) and 5 and its Fig 3 for one "
                                          "model's mad tile embeddings")
    p.add_argument("tiles", help="what mad-embed wrote, e.g. results/mad/MODEL/tiles.h5")
    p.add_argument("--out", required=True, help="the JSON record, e.g. results/mad/MODEL/mad.json")
    p.add_argument("--masks", nargs="*", default=[], metavar="SLIDE_ID=PATH",
                   help="label masks of the test slides, the ground truth of Table 5")
    p.add_argument("--settings", default="{}", help='the config\'s evaluate.mad block as JSON, e.g. \'{"bootstrap": 200}\'')
    p.add_argument("--maps-dir", help="Table 5's label maps (default: segmentation/ beside --out)")
    p.add_argument("--pca", help="also draw Fig 3 (PNG), e.g. results/report/MODEL/mad_pca.png")
    p.set_defaults(handler=_mad_eval)

    p = steps.add_parser("mad-report", help="the MAD paper's Tables 3, 4 and 5 of several models: HTML and TSVs")
    p.add_argument("records", nargs="+", metavar="MODEL=PATH", help="each model's mad.json, in row order")
    p.add_argument("--out-html", required=True, help="e.g. results/report/mad_tables.html")
    p.add_argument("--out-tsv", required=True, help="Table 4, e.g. results/report/mad_tables.tsv")
    p.add_argument("--table3-tsv", help="Table 3 as TSV")
    p.add_argument("--table5-tsv", help="Table 5 as TSV")
    p.set_defaults(handler=_mad_report)

    p = steps.add_parser("evaluation-figures", help="one model's figures and tables from its metric records")
    p.add_argument("--eval-dir", required=True, help="the model's records, e.g. results/eval/MODEL")
    p.add_argument("--embeddings", required=True, help="the model's embeddings file (its model card and sampler)")
    p.add_argument("--out-dir", required=True, help="e.g. results/report/MODEL")
    p.add_argument("--control-dir", help="the records of the model's control, e.g. results/eval/MODEL~init")
    p.add_argument("--settings", default="{}", help="the config's evaluate block as JSON")
    p.set_defaults(handler=_evaluation_figures)

    p = steps.add_parser("rankme-comparison", help="every model's RankMe profile on one chart")
    p.add_argument("records", nargs="+", help="RankMe records, e.g. results/eval/*/rankme.json")
    p.add_argument("--out", required=True, help="output PNG")
    p.set_defaults(handler=_rankme_comparison)

    p = steps.add_parser("report-index", help="the self-contained index page of evaluated models")
    p.add_argument("models", nargs="+", help="model names, in row order")
    p.add_argument("--out", required=True, help="e.g. results/report/index.html")
    p.add_argument("--comparison", required=True, help="the rankme-comparison PNG")
    p.add_argument("--eval-root", default="results/eval")
    p.add_argument("--figure-root", default="results/report")
    p.add_argument("--config", help="the run's configuration (YAML), shown as provenance")
    p.add_argument("--manifests", nargs="*", default=[], help="tile manifests (TSV) for the mpp sources")
    p.add_argument("--slide-table", help="the slide QC table, results/qc/slides.tsv")
    p.add_argument("--slide-level", help="the abmil-table TSV, when region aggregation ran")
    p.add_argument("--mad", help="the mad-report Table 4 TSV, when the MAD evaluation ran")
    p.add_argument("--embeddings", nargs="*", default=[], metavar="MODEL=PATH",
                   help="each model's embeddings file, whose model card gives its training seed and commit")
    p.set_defaults(handler=_report_index)

    p = steps.add_parser("report", help="the three report steps in one go (evaluation-figures of each model, rankme-comparison, report-index)")
    p.add_argument("models", nargs="+", help="model names (folders of --eval-root and --embeddings-root)")
    p.add_argument("--eval-root", default="results/eval")
    p.add_argument("--embeddings-root", default="results/embeddings")
    p.add_argument("--tileset", default=default("embed.tileset"),
                   help="the embedded tile set: {embeddings-root}/{model}/{tileset}.h5")
    p.add_argument("--out-dir", default="results/report")
    p.add_argument("--manifests", nargs="*", default=[], help="tile manifests (TSV) for the mpp sources")
    p.add_argument("--slide-table", help="the slide QC table, results/qc/slides.tsv")
    p.add_argument("--settings", default="{}", help="the config's evaluate block as JSON")
    p.set_defaults(handler=_report)

    p = steps.add_parser("region-embed", help="embed a slide's region tile store and write its region sequences (HDF5)")
    p.add_argument("store", help="the slide's store of the region tile set (every tissue tile, no caps)")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/regions/MODEL/SLIDE.h5")
    _add_encoder_arguments(p)
    p.add_argument("--t", type=int, default=default("aggregate.t"),
                   help="region side in coarsest tiles (t=3 over 3 scales: 189 tokens)")
    p.add_argument("--scales", type=float, nargs="+", default=[2.0, 1.0, 0.5], help="token scales (mpp)")
    p.add_argument("--batch-size", type=int, default=default("aggregate.batch_size"))
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.set_defaults(handler=_region_embed)

    p = steps.add_parser("pretrain-mixer", help="pretrain a mixing encoder with MEM or CMEM on region files (resumable)")
    p.add_argument("regions", nargs="+", help="region files of one encoder, e.g. results/regions/MODEL/*.h5")
    p.add_argument("--out-dir", required=True, help="checkpoint, history.tsv, mixer_encoder.safetensors, card")
    p.add_argument("--settings", default="{}", help='MixerTrainConfig fields as JSON, e.g. \'{"objective": "cmem"}\'')
    p.add_argument("--stop-at", type=int, help="stop (checkpointed) at this iteration; rerun to resume")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.set_defaults(handler=_pretrain_mixer)

    p = steps.add_parser("abmil", help="AB-MIL on slide sheet label columns over region files: AUROC over seeds "
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
    p.set_defaults(handler=_abmil)

    p = steps.add_parser("abmil-table", help="the slide-level AUROC table of AB-MIL records and the design figure")
    p.add_argument("records", nargs="+", help="AB-MIL records, in row order, e.g. results/abmil/MODEL/*/*.json")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-design", help="the design-decision figure (PNG)")
    p.set_defaults(handler=_abmil_table)

    steps.add_parser("pretrain", add_help=False,
                     help="train one DINOv2 run: magflow pretrain --config run.yaml (see magflow pretrain --help); "
                          "multi-GPU: torchrun --nproc_per_node=N -m magflow.pretrain.worker --config run.yaml")

    p = steps.add_parser("export-timm", help="write a finished run's timm local-dir folder (RUN/timm: config.json, "
                                             "model.safetensors, README.md) from its teacher export")
    p.add_argument("run_dir", help="a run's directory: teacher_backbone.safetensors + model_card.json")
    p.set_defaults(handler=_export_timm)

    p = steps.add_parser("read", help="read one square patch at a target mpp into a PNG")
    p.add_argument("slide")
    p.add_argument("--x", type=float, required=True, help="level-0 left (px)")
    p.add_argument("--y", type=float, required=True, help="level-0 top (px)")
    p.add_argument("--size", type=int, default=224, help="output size (px)")
    p.add_argument("--target-mpp", type=float, required=True)
    p.add_argument("--mpp", type=float, help="level-0 mpp, as the sheet's `mpp` column")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_read)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pretrain"]:  # the training entry point has its own flags (and is what torchrun runs)
        from magflow.pretrain.worker import main as pretrain_main

        return pretrain_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except MagflowError as error:
        print(f"magflow {args.step}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
