"""The slide verbs: phantom slides, reading slides, tissue masks and tile stores."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from magflow.cli.common import add_table_outputs, add_verb, wrote
from magflow.defaults import default
from magflow.errors import ConfigError


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


def _slide_qc_table(args: argparse.Namespace) -> int:
    from magflow.report.slide_qc_table import write_slide_table

    write_slide_table(args.masks, args.out_tsv, args.out_html)
    return wrote(args.out_tsv, args.out_html)


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


def _tile_manifest(args: argparse.Namespace) -> int:
    from magflow.preprocess.tile_manifest import write_manifest
    from magflow.sheet import read_sheet

    splits = {e.slide_id: e.split for e in read_sheet(args.sheet)} if args.sheet else {}
    rows = write_manifest(args.stores, splits, args.tileset, args.out_tsv, args.out_html)
    return wrote(args.out_tsv, args.out_html, before=f"{len(rows)} rows")


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "phantom", _phantom, "write a synthetic H&E-like phantom slide with ground truth")
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

    p = add_verb(steps, "info", _info, "print a slide's levels, mpp and where the mpp came from")
    p.add_argument("slide")
    p.add_argument("--slide-id")
    p.add_argument("--mpp", type=float, help="level-0 mpp, as the sheet's `mpp` column (wins over metadata)")

    p = add_verb(steps, "tissue-mask", _tissue_mask, "compute a tissue mask and its QC picture")
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

    p = add_verb(steps, "slide-qc-table", _slide_qc_table,
                 "one table (TSV and HTML) of the slides: mpp, its source, tissue")
    p.add_argument("masks", nargs="+", help="the slides' tissue masks, e.g. results/masks/*.h5")
    add_table_outputs(p, "e.g. results/qc/slides.tsv", "e.g. results/qc/slides.html")

    p = add_verb(steps, "extract-tiles", _extract_tiles,
                 "extract a multi-scale tile store (HDF5) from a slide and its mask")
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

    p = add_verb(steps, "tile-manifest", _tile_manifest,
                 "one tile set's manifest (TSV and HTML): tiles kept per slide and mpp")
    p.add_argument("stores", nargs="+", help="the tile set's stores, e.g. results/tiles/eval/*.h5")
    p.add_argument("--tileset", required=True, help="the tile set's name")
    p.add_argument("--sheet", help="the slide sheet, for its split column")
    add_table_outputs(p, "e.g. results/tiles/eval/manifest.tsv", "e.g. results/tiles/eval/manifest.html")


def add_read_parser(steps: argparse._SubParsersAction) -> None:
    """`read`, the last verb of `magflow --help`."""
    p = add_verb(steps, "read", _read, "read one square patch at a target mpp into a PNG")
    p.add_argument("slide")
    p.add_argument("--x", type=float, required=True, help="level-0 left (px)")
    p.add_argument("--y", type=float, required=True, help="level-0 top (px)")
    p.add_argument("--size", type=int, default=224, help="output size (px)")
    p.add_argument("--target-mpp", type=float, required=True)
    p.add_argument("--mpp", type=float, help="level-0 mpp, as the sheet's `mpp` column")
    p.add_argument("--out", required=True)
