"""The `embed` verb and the frozen-encoder flags it shares with `benchmark`, `mad-embed` and `region-embed`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from magflow.cli.common import add_device, add_pairs, add_verb, listed, pairs, wrote
from magflow.defaults import default
from magflow.embed.control import InitControl
from magflow.embed.external import FEATURES, ExternalModel
from magflow.errors import ConfigError


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


def _add_init_control(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-control", action="store_true",
                   help="embed the --model-dir run's network at initialisation (its control, named RUN~init)")


def _encoder_or_control(args: argparse.Namespace) -> str | ExternalModel | InitControl:
    """The encoder `_encoder_source` parsed, or with --init-control the --model-dir run's initialisation."""
    model = _encoder_source(args)
    if args.init_control:
        if not args.model_dir:
            raise ConfigError("--init-control embeds a run's initialisation: give the run with --model-dir")
        model = InitControl(args.model_dir)
    return model


def _embed(args: argparse.Namespace) -> int:
    from magflow.embed import embed_tileset

    model = _encoder_or_control(args)
    summary = embed_tileset(args.stores, args.out, model, name=args.name, mpps=args.mpps,
                            anchor_mpp=args.anchor_mpp, resample=args.resample, mean_patch=args.mean_patch,
                            labels=pairs(args.labels, "--labels"), label_csv=args.label_csv,
                            batch_size=args.batch_size, workers=args.workers, device=args.device)
    for mpp, count in summary["counts"].items():
        print(f"{mpp} mpp: {count['valid']} tiles embedded, {count['skipped']} skipped")
    return wrote(args.out, before=f"{summary['tiles']} tiles, {summary['complete']} at every mpp "
                                  f"({summary['precision']})")


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "embed", _embed, "embed a tile set's stores at several mpps (a run's teacher or a timm model)")
    p.add_argument("stores", nargs="+", help="the tile stores of one tile set, e.g. results/tiles/eval/*.h5")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/embeddings/MODEL/eval.h5")
    _add_encoder_arguments(p)
    p.add_argument("--mpps", type=float, nargs="+", default=default("embed.mpps"),
                   help=f"target mpps (default: {listed(default('embed.mpps'))})")
    p.add_argument("--anchor-mpp", type=float, help="the tiles' scale (default: the tile set's finest)")
    p.add_argument("--resample", choices=("finest", "nearest_scale"), default=default("embed.resample"),
                   help="finest: every view resized from the finest stored scale by one filter; nearest_scale: "
                        "each from the coarsest stored scale at or finer than its mpp")
    p.add_argument("--mean-patch", action="store_true", help="append the mean patch token to the CLS token")
    _add_init_control(p)
    add_pairs(p, "--labels", "a slide's label mask (with its JSON sidecar) or tile-label CSV")
    p.add_argument("--label-csv", help="a tile-label CSV for many slides (slide_id, x, y or col, row, label)")
    p.add_argument("--batch-size", type=int, default=default("embed.batch_size"))
    p.add_argument("--workers", type=int, default=default("embed.workers"), help="data loader worker processes")
    add_device(p)
