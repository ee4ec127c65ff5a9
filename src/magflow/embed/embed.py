"""Embed a tile set's anchor tiles at every target mpp with one encoder, and write the embeddings file.

Planning (which window of which source patch, per tile and mpp; see ``magflow.embed.protocol``) is
index arithmetic on the stores. The windows are then read patch by patch, each resized to its view by
the loader (``magflow.embed.data``), and the views normalised and encoded in batches (bf16 autocast on
CUDA, float32 on CPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from magflow import provenance
from magflow.embed.data import ViewBatches, ViewJobs
from magflow.embed.control import InitControl
from magflow.embed.encoder import Encoder, ExternalModel, load_encoder
from magflow.embed.labels import TileTable, tile_labels
from magflow.embed.output import Embeddings, write_embeddings
from magflow.embed.protocol import (
    FINEST,
    PROFILE_MPPS,
    RESAMPLE_MODES,
    VIEW_FILTER,
    Anchors,
    ViewPlan,
    default_anchor_mpp,
    plan_views,
    read_anchors,
)
from magflow.errors import ConfigError
from magflow.preprocess.store import TileStore

log = logging.getLogger(__name__)
FLUSH_EVERY = 16  # batches kept on the device before their features are copied back
PROTOCOLS = {  # the ``protocol`` attribute of the embeddings file, per ``resample`` setting
    "finest": "anchor-centred views v2: finest-scale anchor cells, every view resized from the finest stored scale "
              "by one antialiased bilinear filter, no upsampling",
    "nearest_scale": "anchor-centred views v1: finest-scale anchor cells, next finer standard source, no upsampling",
}


@dataclass
class _Slide:
    slide_id: str
    anchors: Anchors | None
    plans: list[ViewPlan]
    first: int   # first output row
    reason: str = ""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _plan(stores: Sequence[Path], mpps: Sequence[float], anchor_mpp: float | None,
          resample: str = FINEST) -> tuple[list[_Slide], float, str]:
    """Every slide's anchors and view plans; the anchor mpp used and the tile set's name."""
    slides: list[_Slide] = []
    first, tileset, cell = 0, "", None
    for path in stores:
        with TileStore(path) as store:
            slide_id = str(store.attrs.get("slide_id", path.stem))
            tileset = tileset or str(store.attrs.get("tileset", ""))
            if anchor_mpp is None:
                anchor_mpp = default_anchor_mpp(store)
            anchors = read_anchors(store, anchor_mpp)
            if anchors is None:
                reason = (f"the store has no {anchor_mpp:g} mpp (anchor) scale; stored: {store.scales} "
                          f"({store.attrs.get('skipped_scales', '')})")
                log.warning("%s: no tiles: %s", slide_id, reason)
                slides.append(_Slide(slide_id, None, [], first, reason))
                continue
            if cell is not None and anchors.cell_px != cell:
                raise ConfigError(f"{path}: {anchors.cell_px} px cells, other stores {cell} px; embed one tile set")
            cell = anchors.cell_px
            plans = [plan_views(store, anchors, float(t), resample) for t in mpps]
            for plan in plans:
                if plan.reason:
                    log.debug("%s at %g mpp: %s", slide_id, plan.target_mpp, plan.reason)
            slides.append(_Slide(slide_id, anchors, plans, first))
            first += len(anchors)
    if all(s.anchors is None for s in slides):
        raise ConfigError(f"embed: no store has the anchor scale {anchor_mpp:g} mpp (e.g. {slides[0].reason}); "
                          "set anchor_mpp to a scale of the tile set")
    for index, mpp in enumerate(mpps):
        plans = [s.plans[index] for s in slides if s.plans]
        skipped = sum(int((~p.valid).sum()) for p in plans)
        if skipped:
            example = next(p.reason for p in plans if p.reason)
            log.warning("%g mpp: %d of %d tiles skipped; for example: %s", mpp, skipped,
                        sum(len(p.rows) for p in plans), example)
    ids = [s.slide_id for s in slides]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the stores repeat slide ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return slides, float(anchor_mpp), tileset


def preview_views(store: str | os.PathLike[str], plan: ViewPlan) -> tuple[np.ndarray, np.ndarray]:
    """(tile rows, N×C×C×3 uint8 views) of one slide at one mpp: what the encoder is shown, rounded to uint8."""
    groups: list[str] = []
    jobs = ViewJobs.from_plans([plan], groups=groups)
    dataset = ViewBatches([store], groups, jobs, jobs.batches(64), plan.cell_px)
    tiles, views = [], []
    for b in range(len(dataset)):
        floats, indices = dataset[b]
        views.append(floats.mul_(255).round_().byte().permute(0, 2, 3, 1).numpy())
        tiles.append(jobs.tile[indices.numpy()])
    dataset.close()
    if not views:
        return np.zeros(0, np.int64), np.zeros((0, plan.cell_px, plan.cell_px, 3), np.uint8)
    return np.concatenate(tiles), np.concatenate(views)


def encode_jobs(encoder: Encoder, dataset: ViewBatches, features: list[np.ndarray],
                device: torch.device, workers: int = 0, progress: bool = True) -> None:
    """Encode every job's view into ``features[job mpp][job tile]``, batch by batch."""
    jobs = dataset.jobs
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    bar = tqdm(total=len(jobs), desc=f"embed [{encoder.name}]", unit="view", disable=not progress, mininterval=1.0)
    pending: list[tuple[np.ndarray, torch.Tensor]] = []

    def flush() -> None:  # one device sync per FLUSH_EVERY batches, so reading the next batch overlaps compute
        for index, out in pending:
            values = out.float().cpu().numpy()
            for mpp in np.unique(jobs.mpp[index]):  # a batch holds the views of its patches at several mpps
                rows = jobs.mpp[index] == mpp
                features[int(mpp)][jobs.tile[index[rows]]] = values[rows]
            bar.update(len(index))
        pending.clear()

    with torch.inference_mode(), autocast:
        for views, index in loader:
            pending.append((index.numpy(), encoder(views.to(device, non_blocking=True))))
            if len(pending) == FLUSH_EVERY:
                flush()
        flush()
    bar.close()


def embed_tileset(stores: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                  model: str | os.PathLike[str] | ExternalModel | InitControl, *, name: str | None = None,
                  mpps: Sequence[float] = PROFILE_MPPS, anchor_mpp: float | None = None, resample: str = FINEST,
                  mean_patch: bool = False,
                  labels: Mapping[str, str | os.PathLike[str] | None] | None = None,
                  label_csv: str | os.PathLike[str] | None = None, batch_size: int = 64, workers: int = 0,
                  device: str | torch.device | None = None, progress: bool = True,
                  config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Embed the anchor tiles of ``stores`` at every mpp of ``mpps`` and write ``out``; return the counts.

    ``model`` is a run's model directory, an :class:`ExternalModel` or a run's :class:`InitControl` (its network
    at initialisation, see ``magflow.embed.control``). ``labels`` maps a slide id to its
    label mask or tile-label CSV and ``label_csv`` is one CSV for many slides (see ``magflow.embed.labels``).
    ``resample``: which stored scale every view is cut from (``finest`` or ``nearest_scale``; see
    ``magflow.embed.protocol``).
    """
    if resample not in RESAMPLE_MODES:
        raise ConfigError(f"embed.resample: '{resample}' is not one of {', '.join(RESAMPLE_MODES)}")
    mpps = sorted({float(m) for m in mpps})
    if not mpps or min(mpps) <= 0 or batch_size < 1 or not stores:
        raise ConfigError(f"embed: needs stores ({len(stores)} given), positive mpps (got {mpps}) and "
                          f"batch_size ≥ 1 (got {batch_size})")
    paths = [Path(s) for s in stores]
    slides, anchor, tileset = _plan(paths, mpps, anchor_mpp, resample)
    device = pick_device(device)
    encoder = load_encoder(model, mean_patch=mean_patch, name=name).to(device)
    n = sum(len(s.anchors) for s in slides if s.anchors is not None)
    cell = next(s.anchors.cell_px for s in slides if s.anchors is not None)
    groups: list[str] = []
    jobs = ViewJobs.concat([ViewJobs.from_plans(s.plans, s.first, i, groups) for i, s in enumerate(slides)])
    dataset = ViewBatches(paths, groups, jobs, jobs.batches(batch_size), cell)
    features = [np.zeros((n, encoder.feature_dim), np.float32) for _ in mpps]
    start = time.perf_counter()
    encode_jobs(encoder, dataset, features, device, workers, progress)
    seconds = time.perf_counter() - start
    dataset.close()

    emb = _assemble(slides, mpps, jobs, features, n)
    table = TileTable(emb.slide, emb.grid, emb.coords,
                      np.concatenate([s.anchors.boxes_um() for s in slides if s.anchors is not None]))
    emb.label, emb.class_names = tile_labels(table, labels, label_csv)
    precision = "bf16-autocast" if device.type == "cuda" else "fp32"
    counts = {f"{m:g}": {"valid": int(emb.valid[m].sum()), "skipped": int(n - emb.valid[m].sum())} for m in mpps}
    emb.attrs = {
        "model": encoder.name, "model_card": encoder.card, "tileset": tileset, "anchor_mpp": anchor, "mpps": mpps,
        "counts": counts, "source_mpp": _source_mpps(slides, mpps), "complete": int(emb.complete().sum()),
        "slides": _slide_counts(slides, mpps), "features": encoder.features, "embed_dim": encoder.embed_dim,
        "feature_dim": encoder.feature_dim, "precision": precision, "device": str(device), "cell_px": cell,
        "protocol": PROTOCOLS[resample], "resample": resample, "view_filter": VIEW_FILTER,
        "views_per_s": len(jobs) / seconds if seconds > 0 else 0.0,
        "provenance": provenance.collect(config=config, precision=precision, stores=[str(p) for p in paths]),
    }
    write_embeddings(out, emb)
    for m in mpps:
        log.info("%g mpp: %d valid, %d skipped", m, counts[f"{m:g}"]["valid"], counts[f"{m:g}"]["skipped"])
    log.info("%d tiles, %d valid at every mpp, %d labelled; %d views in %.1f s", n, emb.attrs["complete"],
             int((emb.label >= 0).sum()), len(jobs), seconds)
    return {"tiles": n, "complete": emb.attrs["complete"], "counts": counts, "views": len(jobs),
            "seconds": seconds, "precision": precision}


def _assemble(slides: list[_Slide], mpps: list[float], jobs: ViewJobs, features: list[np.ndarray],
              n: int) -> Embeddings:
    present = [s for s in slides if s.anchors is not None]
    slide = np.array([s.slide_id for s in present for _ in range(len(s.anchors))], dtype=object)
    grid = np.concatenate([s.anchors.grid for s in present])
    coords = np.concatenate([s.anchors.coords for s in present])
    emb = Embeddings(np.arange(n, dtype=np.int64), slide, grid, coords, np.full(n, -1, np.int64), [], {}, {}, {})
    for index, mpp in enumerate(mpps):
        emb.features[mpp] = features[index]
        emb.valid[mpp] = np.zeros(n, bool)
        emb.valid[mpp][jobs.tile[jobs.mpp == index]] = True
        achieved = np.full(n, np.nan, np.float32)
        for s in present:
            plan = s.plans[index]
            achieved[s.first + np.flatnonzero(plan.valid)] = plan.view_mpp
        emb.mpp_achieved[mpp] = achieved
        plans = [s.plans[index] for s in present]
        source = next((p.source_mpp for p in plans if p.source_mpp is not None), None)
        emb.group_attrs[mpp] = {
            "target_mpp": mpp, "source_mpp": -1.0 if source is None else source,
            "crop_px": {s.slide_id: s.plans[index].crop_px for s in present},
            "resample": plans[0].resample if plans else "",
            "filter": {s.slide_id: s.plans[index].filter for s in present if s.plans[index].valid.any()},
            "valid": int(emb.valid[mpp].sum()), "skipped": int(n - emb.valid[mpp].sum()),
            "centre_error_px": max((p.centre_error_px for p in plans), default=0.0),
        }
    return emb


def _source_mpps(slides: list[_Slide], mpps: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for index, mpp in enumerate(mpps):
        sources = {s.plans[index].source_mpp for s in slides if s.plans and s.plans[index].source_mpp is not None}
        if len(sources) > 1:
            log.warning("%g mpp is read from different source scales on different slides: %s", mpp, sorted(sources))
        out[f"{mpp:g}"] = min(sources) if sources else None
    return out


def _slide_counts(slides: list[_Slide], mpps: list[float]) -> dict[str, Any]:
    return {s.slide_id: {"anchors": len(s.anchors) if s.anchors is not None else 0, "reason": s.reason,
                         "valid": {f"{m:g}": int(p.valid.sum()) for m, p in zip(mpps, s.plans)}} for s in slides}
