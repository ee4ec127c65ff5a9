"""``results/report/index.html``: every model side by side, and where the numbers came from, in one file.

The page is self-contained (figures embedded as base64 PNGs): it can be mailed or archived alone. It is
assembled from the files the other report steps wrote, the ones the Snakemake report shows: each model's
figures (PNG) and tables (TSV) from ``evaluation_figures``, the RankMe comparison, the tile manifests, the slide
table, and the MAD, AB-MIL and benchmark tables. Sections: the RankMe comparison (each run's control, the same
network at initialisation, dashed in the run's colour) and a one-row-per-model summary (with the control's
RankMe and linear-probe range); the models side by side (one column each: RankMe profile, probe curves,
cross-mpp matrix, centroid heatmap, consistency table, segmentation examples, PCA, scores, metric status);
provenance (config, seeds, versions, commits, mpp sources of the slides and of each evaluated mpp).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from magflow import provenance
from magflow.embed.control import control_name
from magflow.pages import escape, figure, fmt, grid, preformatted, table, write_page
from magflow.report.evaluation_figures import model_card, read_records
from magflow.report.names import FIGURES, TABLE_FILES
from magflow.report.tables import model_table
from magflow.tsv import read_tsv

ROWS = (  # (row title, key of a figure in FIGURES or of a table in TABLE_FILES)
    ("RankMe profile (with the sampler's predicted I(y), rescaled)", "rankme"),
    ("Probe curves across mpp", "probes"),
    ("Cross-mpp matrix", "cross_mpp"),
    ("Centroid similarity", "centroids"),
    ("Consistency", "consistency"),
    ("Segmentation examples", "segmentation"),
    ("PCA: parents and their children", "pca"),
    ("Scores per mpp", "scores"),
    ("Metric status", "status"),
)
MISSING = "<p>missing</p>"


def _known(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _ok_result(records: Mapping[str, Mapping[str, Any]], metric: str) -> Mapping[str, Any]:
    record = records.get(metric, {})
    return record.get("result", {}) if record.get("status") == "ok" else {}


def _range(values: list[float], digits: int) -> str:
    return f"{min(values):.{digits}f} / {max(values):.{digits}f}" if values else ""


def _ri(result: Mapping[str, Any]) -> str:
    return f"{result['ri']:.3f} (k={result['k']})" if result.get("ri") is not None else ""


def summary_rows(records: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 controls: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> list[dict[str, str]]:
    """One row per model; ``controls``: model → the records of its control (same network at initialisation)."""
    rows = []
    for model, rec in records.items():
        def ok(metric: str) -> Mapping[str, Any]:
            return _ok_result(rec, metric)
        rankme = _known(ok("rankme").get("rankme", {}).values())
        linear = _known(s["linear"]["balanced_accuracy"]["mean"] for s in ok("probes").get("scores", {}).values())
        control = (controls or {}).get(model) or {}
        control_rankme = _known(_ok_result(control, "rankme").get("rankme", {}).values())
        control_linear = _known(s["linear"]["balanced_accuracy"]["mean"]
                                for s in _ok_result(control, "probes").get("scores", {}).values())
        robust, control_robust = ok("robustness"), _ok_result(control, "robustness")
        pooled = ok("consistency").get("pooled", {})
        seg = _known(s["mean_iou"] for s in ok("segmentation").get("mean_over_slides", {}).values())
        rows.append({"model": model, "RankMe min / max": _range(rankme, 2),
                     "at init: RankMe min / max": _range(control_rankme, 2),
                     "magnification RI (k)": _ri(robust), "at init: magnification RI (k)": _ri(control_robust),
                     "linear bal. acc. min / max": _range(linear, 3),
                     "at init: linear bal. acc. min / max": _range(control_linear, 3),
                     "Δhier": fmt(pooled.get("delta_hier"), 4), "Δsem": fmt(pooled.get("delta_sem"), 4),
                     "seg. mIoU min / max": f"{min(seg):.3f} / {max(seg):.3f}" if seg else "",
                     "skipped": ", ".join(m for m, r in rec.items() if r.get("status") != "ok")})
    return rows


def _cell(folder: Path, key: str, alt: str) -> str:
    """One model's figure or table (from the TSV its evaluation_figures step wrote), or "missing"."""
    path = folder / (FIGURES[key] if key in FIGURES else TABLE_FILES[key])
    if not path.is_file():
        return MISSING
    return figure(path, alt) if key in FIGURES else model_table(key, read_tsv(path))


def side_by_side(models: Sequence[str], figure_dirs: Mapping[str, Path]) -> str:
    return grid(models, [(title, [_cell(figure_dirs[m], key, f"{title}: {m}") for m in models]) for title, key in ROWS])


def provenance_block(models: Sequence[str], records: Mapping[str, Mapping[str, Any]],
                     config: Mapping[str, Any] | None, manifests: Sequence[str | os.PathLike[str]],
                     slide_table: str | os.PathLike[str] | None,
                     cards: Mapping[str, Mapping[str, Any]]) -> str:
    seeds, sources, commits, splits = [], [], [], []
    for model in models:
        rec = records[model]
        first = next(iter(rec.values()))
        emb = first.get("embeddings", {})
        card = cards.get(model) or {}
        card_seed = card.get("seed")
        seeds.append({"model": model, "training seed": "" if card_seed is None else card_seed,
                      **{f"{m} seeds": ", ".join(map(str, r.get("seeds") or [])) for m, r in rec.items()}})
        sources.append({"model": model, "tileset": emb.get("tileset"), "anchor mpp": emb.get("anchor_mpp"),
                        "views resampled from": emb.get("resample"),
                        "source scale per target mpp": json.dumps(emb.get("source_mpp")),
                        "tiles with a view per mpp": json.dumps(emb.get("valid")), "precision": emb.get("precision")})
        commits.append({"model": model, "evaluated at": _commit(first.get("provenance", {}).get("git")),
                        "embedded at": _commit(emb.get("commit")),
                        "trained at": _commit(card.get("commit"))})
        probes = rec.get("probes", {}).get("result", {}).get("split")
        if probes:
            splits.append({"model": model, "mode": probes["mode"], "note": probes["note"],
                           **{f"seed {s['seed']}": f"train {', '.join(s['train'])} | val {', '.join(s['val'])} | "
                                                   f"test {', '.join(s['test'])}" for s in probes["splits"]}})
    parts = ["<h2 id='provenance'>Provenance</h2>",
             table([{"magflow": provenance.collect()["magflow_version"], **provenance.package_versions()}],
                   "Package versions"),
             table(commits, "Git commits"),
             table(seeds, "Seeds (splits: one per seed; −1 = the slide sheet's split)"),
             table(splits, "Slide splits of the label-based metrics"),
             table(sources, "mpp sources of the evaluated embeddings")]
    if slide_table and Path(slide_table).is_file():
        keep = ("slide_id", "mpp", "mpp_source", "warnings")
        parts.append(table([{k: r.get(k, "") for k in keep if k in r} for r in read_tsv(slide_table)],
                           "Slides: level-0 mpp and where it came from (mpp chain)", warn_key="warnings"))
    for path in manifests:
        rows = read_tsv(path)
        parts.append(table(rows, f"Tile manifest {Path(path).parent.name}: achieved mpp per slide and scale",
                           warn_key="note"))
    dumped = json.dumps(config, indent=1, default=str) if config is not None else "not recorded"
    parts.append(f"<h3>Config</h3>{preformatted(dumped)}")
    return "<section>" + "".join(parts) + "</section>"


def _commit(git: Any) -> str:
    if not isinstance(git, Mapping) or not git.get("commit"):
        return "unknown"
    return str(git["commit"])[:12] + (" (uncommitted changes)" if git.get("dirty") else "")


def _tsv_section(tsv: str | os.PathLike[str] | None, anchor: str, heading: str, note: str, caption: str,
                 **table_options: Any) -> list[str]:
    """A section of the index built from a table step's TSV (none when that step did not run)."""
    if not tsv:
        return []
    return [f"<h2 id='{anchor}'>{heading}</h2>", note, table(read_tsv(tsv), caption, **table_options)]


def _slide_level(tsv: str | os.PathLike[str] | None) -> list[str]:
    note = ("<p>AB-MIL on the slide-sheet tasks over region embeddings (mixing encoders pretrained with MEM/CMEM, a "
            "random mixer) and over tile embeddings of one or all magnifications: AUROC on held-out slides, mean "
            "± std over seeds. Per-seed records and reasons: <code>results/abmil/</code>, "
            "<code>results/report/abmil_auroc.html</code>; design decisions averaged over tasks: "
            "<a href='abmil_design.png'>abmil_design.png</a>.</p>")
    return _tsv_section(tsv, "slide-level", "Slide level: region aggregation", note,
                        "AUROC (rows: methods and settings; columns: tasks)")


def _mad(tsv: str | os.PathLike[str] | None) -> list[str]:
    note = ("<p>The MAD paper's evaluation on the <code>mad</code> tile set's own grids (2.5×, 10×, 40×): Table 4 "
            "below; Tables 3 (per-class F1, AMI / DBI) and 5 (segmentation across magnifications, consistency %) with "
            "all three side by side: <a href='mad_tables.html'>mad_tables.html</a>; records: "
            "<code>results/mad/&lt;model&gt;/mad.json</code>; Fig 3: <code>&lt;model&gt;/mad_pca.png</code>.</p>")
    return _tsv_section(tsv, "mad", "MAD evaluation", note, "Table 4: Δhier and Δsem per scale pair (means over "
                        "test-slide parents, bootstrap 95% interval)", warn_key="note")


def _benchmarks(panels: Mapping[str, Mapping[str, str | os.PathLike[str]]] | None) -> list[str]:
    if not panels:
        return []
    note = ("<p>Every model on each multi-magnification benchmark with the <code>cms</code> protocol: probes fit on "
            "the pooled standard mpps (0.25, 0.5, 1, 2), tested at every mpp; balanced accuracy, mean ± std over "
            "the folds. Records with every fold's chosen k and C: <code>results/benchmarks/&lt;benchmark&gt;/"
            "</code>.</p>")
    parts = ["<h2 id='benchmarks'>Benchmarks</h2>", note]
    for name, panel in panels.items():
        parts += [f"<h3>{escape(name)}</h3>", figure(panel["figure"], f"benchmark {name}"),
                  table(read_tsv(panel["table"]), f"{name}: mean balanced accuracy at the standard and intermediate "
                        "mpps, Magnification Robustness Index and RankMe (definitions named), protocol, k and C")]
    return parts


def write_index(out: str | os.PathLike[str], models: Sequence[str], comparison: str | os.PathLike[str], *,
                eval_root: str | os.PathLike[str] = "results/eval", figure_root: str | os.PathLike[str] = "results/report",
                config: Mapping[str, Any] | None = None, manifests: Sequence[str | os.PathLike[str]] = (),
                slide_table: str | os.PathLike[str] | None = None,
                slide_level: str | os.PathLike[str] | None = None,
                benchmarks: Mapping[str, Mapping[str, str | os.PathLike[str]]] | None = None,
                mad: str | os.PathLike[str] | None = None,
                embeddings: Mapping[str, str | os.PathLike[str]] | None = None) -> Path:
    """Write the self-contained index page of ``models`` (in that order): records from ``{eval_root}/{model}``,
    figures and tables from ``{figure_root}/{model}``, mpp sources from the tile ``manifests`` and the
    ``slide_table``; ``slide_level`` is the AB-MIL AUROC table (TSV) of region aggregation, when it ran;
    ``benchmarks``: benchmark → its panel (``figure``, PNG) and table (``table``, TSV) from
    ``magflow.report.benchmark_report``; ``mad`` is the MAD Table 4 (TSV, ``magflow.report.mad_report``), when the
    MAD evaluation ran; ``embeddings``: model → its embeddings file, whose model card gives the training seed and
    commit (a model left out shows neither)."""
    records = {m: read_records(Path(eval_root) / m) for m in models}
    empty = [m for m, r in records.items() if not r]
    if empty:
        raise FileNotFoundError(f"no metric record for {', '.join(empty)}; run the evaluation first")
    figures = {m: Path(figure_root) / m for m in models}
    controls = {m: read_records(Path(eval_root) / control_name(m)) for m in models}
    cards = {m: model_card(path) or {} for m, path in (embeddings or {}).items()}
    intro = (f"<p>{len(models)} model(s). Every number comes from a record in <code>results/eval/&lt;model&gt;/"
             "</code> (JSON with its seeds, constants and provenance); a metric that could not be computed says "
             "why under <i>Metric status</i>.</p><nav><a href='#comparison'>Comparison</a><a href='#models'>Models "
             "side by side</a>" + ("<a href='#mad'>MAD evaluation</a>" if mad else "")
             + ("<a href='#slide-level'>Slide level</a>" if slide_level else "")
             + ("<a href='#benchmarks'>Benchmarks</a>" if benchmarks else "")
             + "<a href='#provenance'>Provenance</a></nav>")
    body = [intro, "<h2 id='comparison'>Comparison</h2>", figure(comparison, "RankMe profiles"),
            table(summary_rows(records, controls), "Summary over mpps (at init: the run's control, the same network "
                  "at initialisation)"), "<h2 id='models'>Models side by side</h2>",
            side_by_side(models, figures), *_mad(mad), *_slide_level(slide_level), *_benchmarks(benchmarks),
            provenance_block(models, records, config, manifests, slide_table, cards)]
    return write_page(out, "magflow - evaluation report", *body)
