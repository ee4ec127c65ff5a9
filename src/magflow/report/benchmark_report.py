"""One panel and one table per multi-magnification benchmark, from its records (one per model).

The panel follows the continuous-magnification paper's figures: x is the mpp (log scale), y the balanced
accuracy of the ``cms`` protocol's probes (fit on the pooled standard mpps, tested at every mpp), one line
per model, mean ± std over the folds as a band; standard mpps (0.25, 0.5, 1, 2) are shaded columns with
filled markers, intermediate mpps open markers. A run's control (``{run}~init``, the same network at
initialisation) is dashed in the run's colour. kNN and the linear probe are side by side.

The table has one row per model: mean balanced accuracy at the standard and at the intermediate mpps,
their gap, the Magnification Robustness Index beside RankMe (both definitions, each named), the protocol
and the k and C chosen on dev in each fold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from magflow.benchmark.record import read_record
from magflow.embed.control import control_of
from magflow.errors import ConfigError
from magflow.pages import fmt, table, write_page
from magflow.plotting import plt, save
from magflow.report.figures import CONTROL_LABEL, CONTROL_STYLE
from magflow.tsv import write_tsv

PROBES = {"knn": "kNN (cosine, k chosen on dev)", "linear": "linear probe (C chosen on dev)"}
SCORE = "balanced_accuracy"
RANKME_NAMES = {"paper": "RankMe, paper (singular values, uncentred)",
                "covariance": "RankMe, covariance (eigenvalues of the covariance, as the authors' code)"}
Record = Mapping[str, Any]


def read_benchmark_records(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Record]:
    """The records at ``paths``, by model, in the order given; all must be of one benchmark."""
    records: dict[str, Record] = {}
    files: dict[str, str] = {}
    for path in paths:
        record = read_record(path)  # refuses a file without the keys read here, naming it
        model = record["model"]
        if model in records:
            raise ConfigError(f"two records of model '{model}' in one panel: {files[model]} and {path}; give each "
                              "model's record once")
        records[model], files[model] = record, str(path)
    benchmarks = {r["benchmark"] for r in records.values()}
    if len(benchmarks) > 1:
        raise ConfigError(f"records of several benchmarks ({', '.join(sorted(benchmarks))}) in one panel: "
                          f"{', '.join(map(str, paths))}; give one benchmark's records")
    return records


def mpps_of(record: Record) -> tuple[list[float], list[float]]:
    """(every mpp of the record, its standard mpps), as floats."""
    return [float(m) for m in record["mpps"]], [float(m) for m in record["standard_mpps"]]


def _is_in(mpp: float, mpps: Sequence[float]) -> bool:
    return any(abs(mpp - m) < 1e-9 for m in mpps)


def profile(record: Record, probe: str, score: str = SCORE) -> tuple[list[float], np.ndarray, np.ndarray]:
    """(mpps, means, stds over folds) of one probe's score; an mpp without a score is left out."""
    per_mpp = record["probes"][probe]["per_mpp"]
    mpps = [m for m in mpps_of(record)[0] if per_mpp.get(f"{m:g}", {}).get(score, {}).get("mean") is not None]
    cells = [per_mpp[f"{m:g}"][score] for m in mpps]
    return (mpps, np.array([c["mean"] for c in cells], float),
            np.array([c.get("std") or 0.0 for c in cells], float))


def split_means(record: Record, probe: str, score: str = SCORE) -> dict[str, float | None]:
    """The mean over the standard mpps and over the intermediate ones of the per-mpp mean ``score``."""
    mpps, means, _ = profile(record, probe, score)
    standard = mpps_of(record)[1]
    chosen = {"standard": [v for m, v in zip(mpps, means) if _is_in(m, standard)],
              "intermediate": [v for m, v in zip(mpps, means) if not _is_in(m, standard)]}
    return {part: (float(np.mean(values)) if values else None) for part, values in chosen.items()}


def _colours(models: Sequence[str]) -> dict[str, str]:
    """One colour per model; a control takes its run's colour when the run is drawn too."""
    own = [m for m in models if control_of(m) not in models]
    colours = {m: f"C{i % 10}" for i, m in enumerate(own)}
    return {m: colours[m] if m in colours else colours[str(control_of(m))] for m in models}


def plot_benchmark(records: Mapping[str, Record], path: str | os.PathLike[str], benchmark: str | None = None) -> None:
    """:func:`draw_benchmark`, saved as a PNG at ``path``."""
    save(draw_benchmark(records, benchmark), path, rect=(0, 0, 1, 0.95))


def draw_benchmark(records: Mapping[str, Record], benchmark: str | None = None) -> Figure:
    """The balanced-accuracy profiles of every model, kNN and linear probe side by side (see the module)."""
    if not records:
        raise ConfigError(f"no benchmark record to draw for {benchmark or 'the benchmark'}")
    first = next(iter(records.values()))
    benchmark = benchmark or first["benchmark"]
    all_mpps, standard = mpps_of(first)
    colours = _colours(list(records))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (probe, title) in zip(axes, PROBES.items()):
        for m in all_mpps:  # standard mpps shaded, as the paper marks its training magnifications
            if _is_in(m, standard):
                ax.axvspan(m / 1.06, m * 1.06, color="0.9", zorder=0, lw=0)
        control_labelled = False
        for model, record in records.items():
            mpps, mean, std = profile(record, probe)
            colour = colours[model]
            is_control = control_of(model) in records
            style = dict(CONTROL_STYLE) if is_control else {"ls": "-", "lw": 1.6}
            label = model
            if is_control:
                label = None if control_labelled else f"dashed: {CONTROL_LABEL}"
                control_labelled = True
            ax.fill_between(mpps, mean - std, mean + std, color=colour, alpha=0.08 if is_control else 0.15, lw=0)
            ax.plot(mpps, mean, color=colour, label=label, **style)
            for m, v in zip(mpps, mean):
                filled = _is_in(m, standard)
                ax.plot(m, v, "o" if not is_control else "s", color=colour, mfc=colour if filled else "white",
                        ms=6 if not is_control else 4.5, zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_mpps, [f"{m:g}" for m in all_mpps])
        ax.minorticks_off()
        ax.set_xlabel("mpp (µm/px): shaded, filled = standard; open = intermediate")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", color="0.9", lw=0.6)
    axes[0].set_ylabel("balanced accuracy (mean ± std over folds)")
    axes[1].legend(fontsize=7, loc="lower right")
    protocol = first.get("protocol", "cms")
    fig.suptitle(f"{benchmark} ({first.get('layout', '')}): probes fit on the pooled standard mpps "
                 f"({', '.join(f'{m:g}' for m in standard)}), tested at each mpp; protocol {protocol}", fontsize=9)
    return fig


def _chosen(record: Record, probe: str, key: str) -> str:
    folds = record["probes"][probe].get("folds") or []
    return ", ".join(f"{fold[key]:g}" for fold in folds if fold.get(key) is not None)


def _rankme_mean(record: Record, definition: str) -> float | None:
    values = [v for v in (record.get("rankme") or {}).get(definition, {}).values() if v is not None]
    return float(np.mean(values)) if values else None


def table_rows(records: Mapping[str, Record]) -> list[dict[str, str]]:
    """One row per model (see the module); numbers are the records' own, means over mpps of per-mpp means."""
    rows = []
    for model, record in records.items():
        knn, linear = split_means(record, "knn"), split_means(record, "linear")
        robustness = record.get("robustness") or {}
        gap = (None if linear["standard"] is None or linear["intermediate"] is None
               else linear["standard"] - linear["intermediate"])
        rows.append({
            "model": model,
            "control of": str(control_of(model) or "") if control_of(model) in records else "",
            "kNN bal. acc., standard mpps": fmt(knn["standard"]),
            "kNN bal. acc., intermediate mpps": fmt(knn["intermediate"]),
            "linear bal. acc., standard mpps": fmt(linear["standard"]),
            "linear bal. acc., intermediate mpps": fmt(linear["intermediate"]),
            "linear: standard − intermediate": fmt(gap),
            "Magnification Robustness Index": fmt(robustness.get("index")),
            f"{RANKME_NAMES['paper']}, mean over mpps": fmt(_rankme_mean(record, "paper"), 2),
            f"{RANKME_NAMES['covariance']}, mean over mpps": fmt(_rankme_mean(record, "covariance"), 2),
            "RankMe images per mpp": str((record.get("rankme") or {}).get("n_per_mpp", "")),
            "protocol": str(record.get("protocol", "")),
            "k per fold": _chosen(record, "knn", "k"),
            "C per fold": _chosen(record, "linear", "C"),
        })
    return rows


def write_benchmark_report(paths: Sequence[str | os.PathLike[str]], figure: str | os.PathLike[str],
                           html_out: str | os.PathLike[str], tsv_out: str | os.PathLike[str],
                           benchmark: str | None = None) -> list[dict[str, str]]:
    """The panel (PNG), the table (HTML and TSV) of one benchmark from its records; returns the rows."""
    records = read_benchmark_records(paths)
    plot_benchmark(records, figure, benchmark)
    rows = table_rows(records)
    name = benchmark or next(iter(records.values()))["benchmark"]
    write_tsv(tsv_out, rows)
    write_page(html_out, f"magflow - benchmark {name}", table(rows, table_caption(name)))
    return rows


def table_caption(benchmark: str) -> str:
    return (f"{benchmark}: balanced accuracy averaged over the standard and over the intermediate mpps (each "
            "mpp's mean over folds), the Magnification Robustness Index (croma, mpp as the confounder) and "
            "RankMe by both definitions")
