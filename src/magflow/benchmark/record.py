"""The benchmark record, ``results/benchmarks/{benchmark}/{model}.json``: one model on one benchmark.

Keys (mpp keys are strings ``f"{mpp:g}"``; NaN is written as ``null``)::

    step: "benchmark", benchmark, layout, model, protocol: "cms",
    mpps: [0.25, 0.375, ...], standard_mpps: [0.25, 0.5, 1.0, 2.0],
    probes: {knn | linear: {per_mpp: {"0.25": {balanced_accuracy | accuracy | macro_f1 | weighted_f1:
                                               {mean, std, n}}},
                            folds: [{fold: 0, k (knn) | C (linear), dev_balanced_accuracy: {candidate: score},
                                     skipped, converged, test: {"0.25": {metric: score}},
                                     rows: {train, dev, test}}]}},
    rankme: {paper: {"0.25": score}, covariance: {"0.25": score}, n_per_mpp, dim, constants: {paper, covariance}},
    robustness: {index, k, support, n, per_mpp, per_mpp_support, pairs, settings, status, reason},
    input_px, native_px, resized, input_size, model_card, feature, normalisation: {mean, std},
    folds: {source, per_fold: [{fold, train, dev, test, groups}]}, counts: {images, per_mpp, labels, groups},
    cms: the protocol's constants, embeddings: the embeddings file, precision, device, images_per_s,
    provenance.

:func:`read_record` reads one back and refuses a file without the keys the report reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from magflow.errors import ConfigError
from magflow.evaluate.cms import CmsResult
from magflow.evaluate.rankme import RankMe

STEP = "benchmark"
PROBE_CHOICE = {"knn": "k", "linear": "C"}
REPORTED_METRICS = ("balanced_accuracy", "accuracy", "macro_f1")
RECORD_KEYS = ("step", "benchmark", "layout", "model", "protocol", "mpps", "standard_mpps", "probes", "rankme",
               "robustness", "input_px", "resized", "model_card", "provenance")


def mpp_key(mpp: float) -> str:
    return f"{float(mpp):g}"


def probe_results(result: CmsResult) -> dict[str, Any]:
    """``probes``: per probe, mean and std over the folds at every mpp, and per fold the chosen k or C."""
    out: dict[str, Any] = {}
    for probe, folds in result.probes.items():
        per_fold = []
        for fold, r in folds.items():
            chosen = int(r.chosen) if probe == "knn" else float(r.chosen)
            per_fold.append({"fold": int(fold), PROBE_CHOICE[probe]: chosen, "converged": r.converged,
                             "dev_balanced_accuracy": {f"{c:g}": s for c, s in r.dev_balanced_accuracy.items()},
                             "skipped": {f"{c:g}": why for c, why in r.skipped.items()},
                             "test": {mpp_key(m): s for m, s in r.test.items()},
                             "rows": {part: result.folds[fold][part] for part in ("train", "dev", "test")}})
        out[probe] = {"per_mpp": {mpp_key(m): cells for m, cells in result.summary(probe).items()},
                      "folds": sorted(per_fold, key=lambda f: f["fold"])}
    return out


def rankme_results(paper: Mapping[float, RankMe], covariance: Mapping[float, RankMe],
                   constants: Mapping[str, Any]) -> dict[str, Any]:
    """``rankme``: both definitions at every mpp, on the same rows."""
    sizes = {r.n for r in (*paper.values(), *covariance.values())}
    if len(sizes) != 1:
        raise ValueError(f"RankMe must use the same rows at every mpp and by both definitions, got N = {sorted(sizes)}")
    return {"paper": {mpp_key(m): r.score for m, r in paper.items()},
            "covariance": {mpp_key(m): r.score for m, r in covariance.items()},
            "n_per_mpp": sizes.pop(), "dim": next(iter(paper.values())).dim, "constants": dict(constants)}


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A benchmark record, checked to hold every key the report reads (:data:`RECORD_KEYS`, and per probe
    ``per_mpp`` and ``folds``, and both RankMe definitions)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"benchmark record {path}: cannot be read as JSON ({error}); rerun `magflow benchmark` "
                          "for it") from None
    problems = [] if isinstance(record, dict) else ["not a JSON object"]
    if not problems:
        problems += [f"no `{key}`" for key in RECORD_KEYS if key not in record]
        if record.get("step", STEP) != STEP:
            problems.append(f"step is '{record['step']}', not '{STEP}'")
        for probe in PROBE_CHOICE:
            cells = (record.get("probes") or {}).get(probe)
            if not isinstance(cells, dict) or "per_mpp" not in cells or "folds" not in cells:
                problems.append(f"no probes.{probe}.per_mpp / folds")
        for definition in ("paper", "covariance", "n_per_mpp"):
            if definition not in (record.get("rankme") or {}):
                problems.append(f"no rankme.{definition}")
        if "index" not in (record.get("robustness") or {}):
            problems.append("no robustness.index")
    if problems:
        raise ConfigError(f"benchmark record {path}: {'; '.join(problems)}; it was not written by this version of "
                          "`magflow benchmark`, rerun it")
    return record
