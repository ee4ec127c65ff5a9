"""The mad_eval step: the MAD paper's evaluation of one model's ``mad`` tile embeddings (results/mad/{model}/mad.json).

Reads what mad_embed wrote (:func:`magflow.evaluate.mad_tiles.read_mad_tiles`: every kept tile of
2.5×, 10× and 40× on its own grid, labelled, with the sheet's splits) and writes one record, protocol
``mad-paper``, with three sections:

- ``hierarchy``: Table 4, Δhier / Δsem per pair of adjacent scales (:mod:`magflow.evaluate.mad_hierarchy`);
- ``table3``: per-class F1 of the linear probe and kNN per magnification, K-Means AMI / DBI
  (:func:`magflow.evaluate.mad_tables.table3`);
- ``table5``: a 10× probe painted on the test slides at every magnification, mIoU / Dice / pixel accuracy
  and consistency % (:func:`magflow.evaluate.mad_tables.table5`; label maps under ``maps_dir``).

A section that the cohort cannot give (no test slide with labels, one class, ...) is recorded as
``{"status": "skipped", "reason": ...}`` and the others are still written. Fig 3 of the paper, the PCA
of parents and their 16 children, is drawn by :func:`magflow.evaluate.mad_pca.plot_mad_pca`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from magflow import provenance
from magflow.defaults import schema_defaults
from magflow.errors import ConfigError
from magflow.evaluate.mad_hierarchy import mad_hierarchy
from magflow.evaluate.mad_tiles import MadTiles, read_mad_tiles
from magflow.evaluate.probe_names import check_probe
from magflow.evaluate.record import MetricSkipped, plain, write_record

log = logging.getLogger(__name__)
PROTOCOL = "mad-paper"


@dataclass(frozen=True)
@schema_defaults("evaluate.mad")
class MadEvalSettings:
    """The config block ``evaluate.mad`` (config/README.md); the defaults are the config schema's."""

    tileset: str                          # the tile set embedded on its own grids
    negatives_per_parent: int             # Table 4: same-class and other-class negatives per parent
    bootstrap: int                        # Table 4: bootstrap resamples of the parents for the 95% interval
    min_children: int | None              # Table 4: aligned children a scored parent needs; None: all f² (the paper)
    seed: int                             # negatives, bootstrap, probe seeds (seed + run), K-Means
    knn_k: int                            # Table 3 kNN
    runs: int                             # Table 3 paper-linear runs
    probe: str                            # Tables 3 and 5: paper-linear or logistic
    segmentation_train_mpp: float         # Table 5: the probe is trained at this scale (10×)
    epochs: int                           # paper-linear: most epochs (probes.PAPER_EPOCHS)
    patience: int                         # paper-linear: early-stopping patience on the val loss (PAPER_PATIENCE)
    pca_parents: int                      # Fig 3: parents drawn per scale pair, each with its children
    max_models: int | None                # workflow: how many models (each run with its control); None: all

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> MadEvalSettings:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"evaluate.mad: unknown keys {unknown}; known: {sorted(known)}")
        out = cls(**values)
        check_probe(str(out.probe), "evaluate.mad.probe")
        small = {k: getattr(out, k) for k in ("negatives_per_parent", "bootstrap", "knn_k", "runs", "epochs",
                                              "patience") if int(getattr(out, k)) < 1}
        if out.min_children is not None and int(out.min_children) < 1:
            raise ConfigError(f"evaluate.mad.min_children: {out.min_children} must be >= 1 (null: all f², the paper)")
        if small or out.pca_parents < 0 or (out.max_models is not None and out.max_models < 0):
            raise ConfigError(f"evaluate.mad: {small or ''} must be >= 1, pca_parents and max_models >= 0; got {out}")
        return out


def check_mad_scales(scales: list[float], key: str) -> None:
    """Refuse a tile set whose adjacent scales (coarsest first) do not nest by a whole factor >= 2."""
    order = sorted((float(m) for m in scales), reverse=True)
    if len(order) < 2:
        raise ConfigError(f"{key}: the MAD evaluation needs at least two scales (parents and children), got {order}")
    bad = [(c, f) for c, f in zip(order[:-1], order[1:])
           if round(c / f) < 2 or abs(round(c / f) - c / f) > 1e-6 * c / f]
    if bad:
        raise ConfigError(f"{key}: {', '.join(f'{c:g} / {f:g}' for c, f in bad)} mpp is not a whole factor >= 2, so "
                          "the grids do not nest and parents have no aligned children; use e.g. [4.0, 1.0, 0.25]")


def _attr(value: Any) -> Any:
    """A tiles-file attribute: the JSON that write_mad_tiles made of a list or mapping, decoded."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _section(name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A section of the record, or why the cohort cannot give it (:class:`MetricSkipped`); a bad setting or
    label mask (ConfigError) and any other error fail the job, naming what to fix."""
    try:
        return {"status": "ok", **compute()}
    except MetricSkipped as error:
        log.warning("%s skipped: %s", name, error)
        return {"status": "skipped", "reason": str(error)}


def evaluate_mad(tiles_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 masks: Mapping[str, str | os.PathLike[str]], settings: MadEvalSettings,
                 maps_dir: str | os.PathLike[str], pca: str | os.PathLike[str] | None = None,
                 config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate one model's mad tiles; write the record ``out`` (and the PCA figure ``pca``); return the record.

    ``masks``: slide → label mask (PNG with its JSON sidecar), the ground truth of Table 5.
    """
    from magflow.evaluate.mad_tables import table3, table5  # with the plotting stack: not needed to plan a run

    tiles: MadTiles = read_mad_tiles(tiles_path)
    model = str(tiles.attrs.get("model", Path(tiles_path).parent.name))
    Path(maps_dir).mkdir(parents=True, exist_ok=True)
    hierarchy = _section("Table 4", lambda: mad_hierarchy(tiles, negatives=settings.negatives_per_parent,
                                                          bootstrap=settings.bootstrap, seed=settings.seed,
                                                          min_children=settings.min_children))
    t3 = _section("Table 3", lambda: table3(tiles, settings))
    t5 = _section("Table 5", lambda: table5(tiles, masks, settings, maps_dir))
    counts = {f"{m:g}": {"tiles": int(len(s.slides)), "labelled": int((s.labels >= 0).sum())}
              for m, s in tiles.scales.items()}
    record = {"model": model, "protocol": PROTOCOL, "settings": asdict(settings), "hierarchy": hierarchy,
              "table3": t3, "table5": t5,
              "tiles": {"path": str(tiles_path), "class_names": tiles.class_names, "splits": tiles.splits,
                        "counts": counts, **{k: _attr(tiles.attrs.get(k)) for k in (
                            "tileset", "features", "precision", "missing_scales", "unlabelled_slides",
                            "max_tiles_per_scale")}},
              "provenance": provenance.collect(config=config, seeds={"mad": settings.seed}, precision="float64")}
    write_record(out, plain(record))
    if pca is not None:
        from magflow.evaluate.mad_pca import plot_mad_pca

        plot_mad_pca(tiles, pca, parents=settings.pca_parents, seed=settings.seed)
    for name, section in (("Table 4", hierarchy), ("Table 3", t3), ("Table 5", t5)):
        log.info("%s: %s %s", name, section["status"], section.get("reason", ""))
    return record
