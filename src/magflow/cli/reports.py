"""The report verbs: the MAD tables, each model's figures, the RankMe comparison and the index page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from magflow.cli.common import add_pairs, add_verb, pairs, wrote
from magflow.defaults import default

EVALUATE_SETTINGS_HELP = "the config's evaluate block as JSON"
MANIFESTS_HELP = "tile manifests (TSV) for the mpp sources"
SLIDE_TABLE_HELP = "the slide QC table, results/qc/slides.tsv"


def _mad_report(args: argparse.Namespace) -> int:
    from magflow.report.mad_report import write_mad_tables

    html = write_mad_tables(pairs(args.records, "records"), args.out_tsv, args.out_html,
                            table3_tsv=args.table3_tsv, table5_tsv=args.table5_tsv)
    return wrote(html, args.out_tsv)


def _evaluation_figures(args: argparse.Namespace) -> int:
    from magflow.report.evaluation_figures import write_model_report

    write_model_report(args.eval_dir, args.embeddings, args.out_dir, json.loads(args.settings), args.control_dir)
    print(f"wrote the figures and tables of {args.eval_dir} to {args.out_dir}")
    return 0


def _rankme_comparison(args: argparse.Namespace) -> int:
    from magflow.report.rankme_comparison import plot_rankme_comparison_files

    plot_rankme_comparison_files(args.records, args.out)
    return wrote(args.out)


def _report_index(args: argparse.Namespace) -> int:
    import yaml

    from magflow.report.report_index import write_index

    config = yaml.safe_load(Path(args.config).read_text()) if args.config else None
    return wrote(write_index(args.out, args.models, args.comparison, eval_root=args.eval_root,
                             figure_root=args.figure_root, config=config, manifests=args.manifests,
                             slide_table=args.slide_table, slide_level=args.slide_level, mad=args.mad,
                             embeddings=pairs(args.embeddings, "--embeddings")))


def _report(args: argparse.Namespace) -> int:
    from magflow.report.build import build_report

    return wrote(build_report(args.models,
                              {m: Path(args.embeddings_root) / m / f"{args.tileset}.h5" for m in args.models},
                              args.eval_root, args.out_dir, json.loads(args.settings), manifests=args.manifests,
                              slide_table=args.slide_table))


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "mad-report", _mad_report, "the MAD paper's Tables 3, 4 and 5 of several models: HTML and TSVs")
    p.add_argument("records", nargs="+", metavar="MODEL=PATH", help="each model's mad.json, in row order")
    p.add_argument("--out-html", required=True, help="e.g. results/report/mad_tables.html")
    p.add_argument("--out-tsv", required=True, help="Table 4, e.g. results/report/mad_tables.tsv")
    p.add_argument("--table3-tsv", help="Table 3 as TSV")
    p.add_argument("--table5-tsv", help="Table 5 as TSV")

    p = add_verb(steps, "evaluation-figures", _evaluation_figures,
                 "one model's figures and tables from its metric records")
    p.add_argument("--eval-dir", required=True, help="the model's records, e.g. results/eval/MODEL")
    p.add_argument("--embeddings", required=True, help="the model's embeddings file (its model card and sampler)")
    p.add_argument("--out-dir", required=True, help="e.g. results/report/MODEL")
    p.add_argument("--control-dir", help="the records of the model's control, e.g. results/eval/MODEL~init")
    p.add_argument("--settings", default="{}", help=EVALUATE_SETTINGS_HELP)

    p = add_verb(steps, "rankme-comparison", _rankme_comparison, "every model's RankMe profile on one chart")
    p.add_argument("records", nargs="+", help="RankMe records, e.g. results/eval/*/rankme.json")
    p.add_argument("--out", required=True, help="output PNG")

    p = add_verb(steps, "report-index", _report_index, "the self-contained index page of evaluated models")
    p.add_argument("models", nargs="+", help="model names, in row order")
    p.add_argument("--out", required=True, help="e.g. results/report/index.html")
    p.add_argument("--comparison", required=True, help="the rankme-comparison PNG")
    p.add_argument("--eval-root", default="results/eval")
    p.add_argument("--figure-root", default="results/report")
    p.add_argument("--config", help="the run's configuration (YAML), shown as provenance")
    p.add_argument("--manifests", nargs="*", default=[], help=MANIFESTS_HELP)
    p.add_argument("--slide-table", help=SLIDE_TABLE_HELP)
    p.add_argument("--slide-level", help="the abmil-table TSV, when region aggregation ran")
    p.add_argument("--mad", help="the mad-report Table 4 TSV, when the MAD evaluation ran")
    add_pairs(p, "--embeddings", "each model's embeddings file, whose model card gives its training seed and commit",
              metavar="MODEL=PATH")

    p = add_verb(steps, "report", _report,
                 "the three report steps in one go (evaluation-figures of each model, rankme-comparison, report-index)")
    p.add_argument("models", nargs="+", help="model names (folders of --eval-root and --embeddings-root)")
    p.add_argument("--eval-root", default="results/eval")
    p.add_argument("--embeddings-root", default="results/embeddings")
    p.add_argument("--tileset", default=default("embed.tileset"),
                   help="the embedded tile set: {embeddings-root}/{model}/{tileset}.h5")
    p.add_argument("--out-dir", default="results/report")
    p.add_argument("--manifests", nargs="*", default=[], help=MANIFESTS_HELP)
    p.add_argument("--slide-table", help=SLIDE_TABLE_HELP)
    p.add_argument("--settings", default="{}", help=EVALUATE_SETTINGS_HELP)
