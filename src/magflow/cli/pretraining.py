"""The pretraining verbs: `pretrain` (the training entry point, with its own flags) and `export-timm`."""

from __future__ import annotations

import argparse

from magflow.cli.common import add_verb


def _export_timm(args: argparse.Namespace) -> int:
    from magflow.pretrain.export import export_timm_run

    folder = export_timm_run(args.run_dir)
    print(f"wrote {folder}: timm.create_model('local-dir:{folder}', pretrained=True) loads it")
    return 0


def add_parsers(steps: argparse._SubParsersAction) -> None:
    # listed only: `main` hands `magflow pretrain ...` to magflow.pretrain.worker before any parsing here
    steps.add_parser("pretrain", add_help=False,
                     help="train one DINOv2 run: magflow pretrain --config run.yaml (see magflow pretrain --help); "
                          "multi-GPU: torchrun --nproc_per_node=N -m magflow.pretrain.worker --config run.yaml")

    p = add_verb(steps, "export-timm", _export_timm,
                 "write a finished run's timm local-dir folder (RUN/timm: config.json, "
                 "model.safetensors, README.md) from its teacher export")
    p.add_argument("run_dir", help="a run's directory: teacher_backbone.safetensors + model_card.json")
