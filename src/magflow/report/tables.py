"""The tables of one model's metric records: scores per mpp, the Robustness Index, the consistency table,
what was skipped. Rows here; the evaluation_figures step writes them as TSVs (:data:`TABLE_FILES`) and every
page shows them with :func:`model_table`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from magflow.pages import fmt, mean_std, table

Records = Mapping[str, Mapping[str, Any]]  # metric → record
Rows = list[dict[str, str]]
CAPTIONS = {  # table key (as in TABLE_FILES) → (caption, the column that flags a row)
    "scores": ("Scores per mpp (probes: mean ± std over splits; segmentation: mean over test slides; "
               "magnification RI: mean per-tile Robustness Index of the tiles at that mpp)", None),
    "robustness": ("Magnification Robustness Index (croma RI; class: tile label, confounder: mpp, neighbours "
                   "never from the tile's own slide or patient; above 0.5: the class outweighs the mpp)", None),
    "consistency": ("Cross-magnification consistency", None),
    "status": ("Metric status (skips and left-out mpps, with reasons)", "reason"),
}


def _ok(records: Records, metric: str) -> Mapping[str, Any]:
    record = records.get(metric) or {}
    return record.get("result", {}) if record.get("status") == "ok" else {}


def scores_rows(records: Records) -> Rows:
    """One row per mpp: RankMe, kNN and linear balanced accuracy, K-Means AMI, segmentation mIoU."""
    rankme, probes, clusters, seg, robust = (_ok(records, m) for m in ("rankme", "probes", "clustering",
                                                                       "segmentation", "robustness"))
    mpps = sorted({float(k) for part in (rankme.get("rankme", {}), probes.get("scores", {}),
                                         clusters.get("scores", {}), seg.get("mean_over_slides", {})) for k in part})
    rows = []
    for m in mpps:
        key = f"{m:g}"
        probe = probes.get("scores", {}).get(key, {})
        cluster = clusters.get("scores", {}).get(key, {})
        painted = seg.get("mean_over_slides", {}).get(key, {})
        rows.append({"mpp": key, "RankMe": fmt(rankme.get("rankme", {}).get(key), 2),
                     "magnification RI": fmt(robust.get("per_mpp", {}).get(key)),
                     "kNN bal. acc.": mean_std(probe.get("knn", {}).get("balanced_accuracy")),
                     "linear bal. acc.": mean_std(probe.get("linear", {}).get("balanced_accuracy")),
                     "linear macro-F1": mean_std(probe.get("linear", {}).get("macro_f1")),
                     "K-Means AMI": fmt(cluster.get("ami")), "DBI": fmt(cluster.get("davies_bouldin"), 2),
                     "seg. mIoU": fmt(painted.get("mean_iou")), "seg. Dice": fmt(painted.get("mean_dice")),
                     "seg. pixel acc.": fmt(painted.get("pixel_accuracy"))})
    return rows


def robustness_rows(records: Records, control: Records | None = None) -> Rows:
    """The Magnification Robustness Index (croma's RI, mpp as the confounder) of the model and of its control,
    with the settings croma computed it with."""
    rows = []
    for who, recs in (("this model", records), ("at init (control)", control or {})):
        result = _ok(recs, "robustness")
        if not result:
            continue
        settings = result.get("settings", {})
        rows.append({"model": who, "RI": fmt(result.get("ri")), "k": fmt(result.get("k")),
                     "support": fmt(result.get("support")), "samples (tile × mpp)": fmt(result.get("n")),
                     "design": fmt(settings.get("design")), "k candidates": fmt(settings.get("k_candidates")),
                     "croma": fmt(settings.get("version"))})
    return rows


def consistency_rows(records: Records) -> Rows:
    """Δhier / Δsem between the coarse and fine mpp, and how much a probe keeps across them."""
    hier, cross = _ok(records, "consistency"), _ok(records, "cross_mpp")
    rows = []
    if hier:
        pooled = hier["pooled"]
        rows.append({"measure": f"Δhier ({hier['coarse_mpp']:g} → {hier['fine_mpp']:g} mpp)",
                     "value": fmt(pooled["delta_hier"], 4),
                     "detail": f"S_pos {fmt(pooled['s_pos'], 4)} − S_neg_same {fmt(pooled['s_neg_same'], 4)}; "
                               f"{hier['n_parents']} parents, {hier['n_children']} children"})
        rows.append({"measure": "Δsem", "value": fmt(pooled["delta_sem"], 4),
                     "detail": f"S_neg_same − S_neg_diff {fmt(pooled['s_neg_diff'], 4)}; labels: {hier['labels']}"})
    if cross:
        mpps = [float(m) for m in cross["mpps"]]
        kept = cross["balanced_accuracy"]["retained_percent"]
        ends = (hier.get("coarse_mpp", 1.0), hier.get("fine_mpp", 0.25))
        for train, test in (ends, ends[::-1]):
            if train in mpps and test in mpps:
                a, b = mpps.index(train), mpps.index(test)
                rows.append({"measure": f"probe trained at {train:g}, tested at {test:g} mpp",
                             "value": mean_std({"mean": kept["mean"][a][b], "std": kept["std"][a][b]}, 1),
                             "detail": "accuracy retained %: share of its balanced accuracy at its own mpp"})
        for a, train in enumerate(mpps):
            others = [kept["mean"][a][b] for b in range(len(mpps)) if b != a and kept["mean"][a][b] is not None]
            if others:
                rows.append({"measure": f"probe trained at {train:g} mpp, mean over the other mpps",
                             "value": f"{sum(others) / len(others):.1f}", "detail": "accuracy retained %"})
    return rows


def status_rows(records: Records) -> Rows:
    """One row per metric: its status, why it was skipped, which mpps it left out and why."""
    return [{"metric": metric, "status": r.get("status"), "reason": r.get("reason", ""),
             "mpps left out": "; ".join(f"{k}: {v}" for k, v in (r.get("result", {}).get("left_out") or {}).items())}
            for metric, r in records.items()]


def model_tables(records: Records, control: Records | None = None) -> dict[str, Rows]:
    """Every table of one model, by key (the order of :data:`CAPTIONS`); ``control``: its control's records."""
    return {"scores": scores_rows(records), "robustness": robustness_rows(records, control),
            "consistency": consistency_rows(records), "status": status_rows(records)}


def model_table(key: str, rows: Rows) -> str:
    """Table ``key`` of a model as HTML, with its caption."""
    caption, warn_key = CAPTIONS[key]
    return table(rows, caption, warn_key=warn_key)
