"""The MAD paper's tables over every evaluated model: results/report/mad_tables.html and its TSVs.

Read from each model's ``results/mad/{model}/mad.json`` (:mod:`magflow.evaluate.mad_eval`):

- Table 3 (per-class F1 of the linear probe and kNN at 2.5×, 10×, 40×, mean ± std over the runs; then
  K-Means AMI and Davies-Bouldin index over the test tiles of all magnifications): ``mad_table3.tsv``;
- Table 4 (S_pos, S_neg^same, S_neg^diff, Δhier and Δsem with their bootstrap 95% intervals over
  parents, per scale pair, and how many parents were scored or dropped): ``mad_tables.tsv``, the table
  ``results/report/index.html`` shows;
- Table 5 (mIoU, Dice and pixel accuracy per magnification of a probe trained at 10×, and consistency %
  = 100 · mIoU 40× / mIoU 10×): ``mad_table5.tsv``.

A run's control (``{run}~init``, the same network at initialisation) is its own row, named so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from magflow.defaults import default
from magflow.embed.control import control_of
from magflow.pages import escape, notes, table, write_page
from magflow.tsv import write_tsv

SCORES = (("S_pos", "s_pos"), ("S_neg^same", "s_neg_same"), ("S_neg^diff", "s_neg_diff"))
DELTAS = (("Δhier", "delta_hier"), ("Δsem", "delta_sem"))
MAGNIFICATIONS = ("2.5x", "10x", "40x")
NA = "n/a"


def model_label(model: str) -> str:
    run = control_of(model)
    return f"{model} (control: {run} at initialisation)" if run else model


def _num(value: Any, digits: int = 4) -> str:
    return NA if value is None else f"{float(value):.{digits}f}"


def _ci(score: Mapping[str, Any] | None) -> str:
    if not score:
        return NA
    lo, hi = score.get("ci95") or (None, None)
    return f"{_num(score.get('mean'))} [{_num(lo)}, {_num(hi)}]"


def _mean_std(score: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not score:
        return NA
    if len(score.get("per_run") or []) <= 1:  # one run (kNN, a deterministic probe): no spread to show
        return _num(score.get("mean"), digits)
    return f"{_num(score.get('mean'), digits)} ± {_num(score.get('std'), digits)}"


def _mags(scores: Mapping[str, Any]) -> list[str]:
    """The magnification keys of a table, in the paper's order (others after)."""
    return [m for m in MAGNIFICATIONS if m in scores] + [m for m in scores if m not in MAGNIFICATIONS]


def _sections(records: Mapping[str, Mapping[str, Any]], key: str, title: str,
              notes: list[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(model, its record's ``key`` section) for every record whose section ran; a note for each that did not."""
    for model, record in records.items():
        section = record.get(key, {})
        if section.get("status") != "ok":
            notes.append(f"{model}: {title} skipped: {section.get('reason', 'no record')}")
            continue
        yield model, section


def table4_rows(records: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, str]], list[str]]:
    rows: list[dict[str, str]] = []
    notes: list[str] = []
    for model, section in _sections(records, "hierarchy", "Table 4", notes):
        for key, pair in section.get("pairs", {}).items():
            counts = pair.get("counts", {})
            row = {"model": model_label(model), "pair": pair.get("pair", key)}
            ok = pair.get("status") == "ok"
            row.update({name: _num((pair.get(field) or {}).get("mean")) if ok else NA for name, field in SCORES})
            row.update({f"{name} [95% CI]": _ci(pair.get(field)) if ok else NA for name, field in DELTAS})
            no_negative = counts.get("no_same_class_negative", 0) + counts.get("no_other_class_negative", 0)
            drawn = counts.get("pairs_neg_same", 0) + counts.get("pairs_neg_diff", 0)
            row.update({"parents scored": str(counts.get("scored", 0)),
                        "dropped: incomplete / unlabelled / no negative":
                            f"{counts.get('incomplete', 0)} / {counts.get('unlabelled', 0)} / {no_negative}",
                        "negatives from other slides":
                            f"{counts.get('negatives_from_other_slides', 0)} of {drawn}" if ok else NA,
                        "note": "" if ok else str(pair.get("reason", ""))})
            rows.append(row)
    return rows, notes


def table3_rows(records: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, str]], list[str]]:
    rows: list[dict[str, str]] = []
    notes: list[str] = []
    for model, section in _sections(records, "table3", "Table 3", notes):
        scores = section.get("scores", {})
        mags = _mags(scores)
        classes = list(dict.fromkeys(c for m in mags for c in scores[m].get("classes", [])))
        kmeans = section.get("kmeans", {})
        for name in [*classes, "macro F1"]:
            row = {"model": model_label(model), "class": name}
            for method, label in (("linear", f"linear ({section.get('probe', '')})"), ("knn", "kNN")):
                for m in MAGNIFICATIONS:
                    part = scores.get(m, {}).get(method, {})
                    value = part.get("macro_f1") if name == "macro F1" else part.get("per_class_f1", {}).get(name)
                    row[f"{label} {m.replace('x', '×')}"] = _mean_std(value)
            row["AMI"] = _num(kmeans.get("ami"), 3) if name == "macro F1" else ""
            row["DBI"] = _num(kmeans.get("davies_bouldin"), 3) if name == "macro F1" else ""
            rows.append(row)
        for m, why in section.get("left_out", {}).items():
            notes.append(f"{model}: Table 3 at {m.replace('x', '×')} n/a: {why}")
        for m in mags:
            if scores[m].get("knn", {}).get("status") == "skipped":
                notes.append(f"{model}: Table 3 kNN at {m.replace('x', '×')} n/a: {scores[m]['knn'].get('reason')}")
        if "skipped" in kmeans:
            notes.append(f"{model}: Table 3 AMI / DBI n/a: {kmeans['skipped']}")
    return rows, notes


def table5_rows(records: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, str]], list[str]]:
    rows: list[dict[str, str]] = []
    notes: list[str] = []
    for model, section in _sections(records, "table5", "Table 5", notes):
        scores = section.get("scores", {})
        row = {"model": model_label(model), "trained at": str(section.get("train_magnification", ""))}
        for metric, label in (("mean_iou", "mIoU"), ("mean_dice", "Dice"), ("pixel_accuracy", "pixel acc."),
                              ("coverage", "coverage")):
            for m in MAGNIFICATIONS:
                row[f"{label} {m.replace('x', '×')}"] = _num(scores.get(m, {}).get(metric))
        row["consistency % (40× / 10× mIoU)"] = _num(section.get("consistency_percent"), 1)
        rows.append(row)
    return rows, notes


def read_mad_records(paths: Mapping[str, str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    return {model: json.loads(Path(path).read_text()) for model, path in paths.items()}


def _write_tsv(path: str | os.PathLike[str], rows: list[dict[str, str]]) -> None:
    write_tsv(path, rows, None if rows else ["model"])


def write_mad_tables(records: Mapping[str, str | os.PathLike[str]], tsv: str | os.PathLike[str],
                     html_out: str | os.PathLike[str], table3_tsv: str | os.PathLike[str] | None = None,
                     table5_tsv: str | os.PathLike[str] | None = None) -> Path:
    """Tables 3, 4 and 5 of ``records`` (model → its mad.json, in row order): Table 4 to ``tsv``, all three to
    ``html_out`` (and Tables 3 and 5 to their own TSVs when given)."""
    data = read_mad_records(records)
    t3, n3 = table3_rows(data)
    t4, n4 = table4_rows(data)
    t5, n5 = table5_rows(data)
    _write_tsv(tsv, t4)
    if table3_tsv:
        _write_tsv(table3_tsv, t3)
    if table5_tsv:
        _write_tsv(table5_tsv, t5)
    first = next(iter(data.values()), {})
    settings = first.get("settings", {})
    tileset = escape(settings.get("tileset", default("evaluate.mad.tileset")))
    intro = (f"<p>The MAD paper's evaluation (protocol <code>mad-paper</code>) on the <code>{tileset}</code> tile "
             "set's own grids: every kept tile of 2.5×, 10× and 40× embedded at its own scale, labelled by the "
             "majority class of the label mask under it; the slide sheet's train / val / test split. Records: "
             "<code>results/mad/&lt;model&gt;/mad.json</code>. A run's control (<code>~init</code>) is the same "
             "network at initialisation.</p>")
    t4_caption = ("Table 4: cross-magnification consistency on the test slides. Per complete parent (all 16 "
                  "aligned children kept), S_pos = mean cosine to its children, S_neg = mean cosine to "
                  f"{settings.get('negatives_per_parent', '')} non-aligned fine tiles of the same / another class "
                  "drawn across all test slides; Δhier = S_pos − S_neg^same, Δsem = S_neg^same − S_neg^diff; means "
                  f"over parents with a percentile bootstrap 95% interval ({settings.get('bootstrap', '')} resamples)")
    t3_caption = ("Table 3: per-class F1 on the test tiles at each magnification (linear probe trained on the "
                  "train-split tiles of that magnification, kNN against them; mean ± std over the runs), and K-Means "
                  "AMI / Davies-Bouldin index over the labelled test tiles of all magnifications")
    t5_caption = ("Table 5: tile-based segmentation of the test slides by one probe trained at 10×, applied at "
                  "every magnification on its own grid: mIoU, Dice and pixel accuracy over the labelled pixels "
                  "covered; consistency % = 100 · mIoU(40×) / mIoU(10×)")
    return write_page(html_out, "MAD evaluation: Tables 3, 4 and 5", intro,
                      "<h2>Table 3</h2>", table(t3, t3_caption), notes(n3),
                      "<h2>Table 4</h2>", table(t4, t4_caption, warn_key="note"), notes(n4),
                      "<h2>Table 5</h2>", table(t5, t5_caption), notes(n5))
