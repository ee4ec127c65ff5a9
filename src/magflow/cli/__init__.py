"""The `magflow` command line: each pipeline step, callable outside Snakemake."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from magflow import __version__
from magflow.cli import aggregation, benchmarks, embedding, evaluation, pretraining, reports, sampling, slides
from magflow.cli.common import Handler
from magflow.errors import MagflowError

__all__ = ["main", "build_parser"]

# each stage module registers its verbs (a module is not named after a step: one module per step name);
# in this order, the order of `magflow --help`
STAGES = (slides.add_parsers, sampling.add_parsers, embedding.add_parsers, benchmarks.add_parsers,
          evaluation.add_parsers, reports.add_parsers, aggregation.add_parsers, pretraining.add_parsers,
          slides.add_read_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"magflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    steps = parser.add_subparsers(dest="step", required=True)
    for add_parsers in STAGES:
        add_parsers(steps)
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
