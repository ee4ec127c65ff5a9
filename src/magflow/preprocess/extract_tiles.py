"""Multi-scale tile extraction: each tissue block is decoded once and every scale is cut from it.

The slide is cut into blocks aligned to the coarsest grid. A block's pixels are read once, at the
finest servable scale, over the union of its tiles' source windows; every coarser scale is an exact
area reduction (a whole factor) of that buffer, and tiles are slices of the per-scale buffers. So
every tile of a scale is made the same way, whatever else its block holds: from the same pyramid
level (recorded as ``read_level``), never from a coarser level that happens to be stored.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from magflow import __version__, provenance
from magflow.defaults import schema_defaults
from magflow.errors import ConfigError, SlideError
from magflow.preprocess.mask_store import read_mask
from magflow.preprocess.tissue import TissueMask
from magflow.preprocess.scales import ScalePlan, SkippedScale, plan_scales
from magflow.preprocess.store import ScaleContent, StoreWriter, encode_jpeg
from magflow.preprocess.tiling import ScaleGrid, make_grid, select_cells, tissue_fractions
from magflow.slides.reader import DEFAULT_MAX_PLAIN_MEGAPIXELS, DEFAULT_TOLERANCE, Slide

log = logging.getLogger(__name__)
cv2.setNumThreads(1)  # parallelism comes from `workers` alone, so one worker means one core
BLOCK_FINEST_PX = 4096  # target block width in finest-scale pixels (bounds memory per block)


@dataclass(frozen=True)
@schema_defaults("tilesets.<name>")
class TileSetParams:
    name: str
    scales: list[float]
    cell_px: int
    source_px: int
    min_tissue: float
    max_tiles_per_scale: int | None
    seed: int
    nested: bool                          # keep coarser cells only as ancestors of the kept finest cells (same centres)
    jpeg_quality: int | None              # store each source patch as a JPEG of this quality (4:4:4); None: raw

    def check(self) -> None:
        where = f"tilesets.{self.name}"
        if self.jpeg_quality is not None and not (isinstance(self.jpeg_quality, int) and 1 <= self.jpeg_quality <= 100):
            raise ConfigError(f"{where}.jpeg_quality: must be an integer from 1 to 100 (90 keeps the mean pixel "
                              f"error near 1.5 grey levels), or null for raw pixels; got {self.jpeg_quality!r}")
        if self.source_px < self.cell_px or (self.source_px - self.cell_px) % 2:
            raise ConfigError(f"{where}: source_px ({self.source_px}) must be ≥ cell_px ({self.cell_px}) and "
                              "differ from it by an even number, so the context window is centred on whole pixels")
        if len(set(self.scales)) != len(self.scales) or not self.scales:
            raise ConfigError(f"{where}: scales must be a non-empty list of distinct mpps, got {self.scales}")


@dataclass
class _Scale:
    plan: ScalePlan
    grid_def: ScaleGrid
    grid: np.ndarray           # (N, 2) col, row, raster order
    tissue: np.ndarray
    available: int
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    """One block: read [x0, x1)×[y0, y1) finest-scale pixels, cut the listed tiles."""

    x0: int
    y0: int
    x1: int
    y1: int
    tiles: tuple[tuple[int, int, int, int], ...]  # (scale index, store row, src x, src y) in finest px


def _cell_rng(seed: int, slide_id: str, target: float) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(slide_id.encode()), int(round(target * 1000))])


def _plan_jobs(scales: list[_Scale], params: TileSetParams) -> list[_Job]:
    """Group every kept tile of every scale into blocks aligned to the coarsest grid."""
    top = math.lcm(*(s.plan.factor for s in scales))  # blocks start where every scale's pixels do
    per_coarse = top * params.cell_px
    block = per_coarse * max(1, round(BLOCK_FINEST_PX / per_coarse))
    margin = (params.source_px - params.cell_px) // 2
    grouped: dict[tuple[int, int], list[tuple[int, int, int, int]]] = defaultdict(list)
    for index, scale in enumerate(scales):
        k = scale.plan.factor
        for row, (col, grid_row) in enumerate(scale.grid):
            cx, cy = k * params.cell_px * int(col), k * params.cell_px * int(grid_row)
            grouped[(cy // block, cx // block)].append((index, row, cx - k * margin, cy - k * margin))
    jobs = []
    for key in sorted(grouped):
        tiles = grouped[key]
        spans = [scales[t[0]].plan.factor * params.source_px for t in tiles]
        x0 = min(t[2] for t in tiles) // top * top
        y0 = min(t[3] for t in tiles) // top * top
        x1 = -(-max(t[2] + s for t, s in zip(tiles, spans)) // top) * top
        y1 = -(-max(t[3] + s for t, s in zip(tiles, spans)) // top) * top
        jobs.append(_Job(x0, y0, x1, y1, tuple(tiles)))
    return jobs


@dataclass(frozen=True)
class _Layout:
    """What every block job needs to know about the tile set on this slide."""

    finest_mpp: float
    factors: list[int]
    source_px: int
    jpeg_quality: int | None


def _run_job(job: _Job, slide: Slide, layout: _Layout, inner: ThreadPoolExecutor | None = None,
             threads: int = 1) -> list[tuple[int, int, np.ndarray]]:
    """Decode one block once and cut all its tiles at every scale; ``inner`` spreads the block's work
    over ``threads`` threads (the slide's reads too, if set with ``Slide.decode_on``)."""
    finest, factors, source_px = layout.finest_mpp, layout.factors, layout.source_px
    to_level0 = finest / slide.mpp  # level-0 pixels per finest-scale pixel
    # Each tile's source window in buffer pixels (x0, y0, x1, y1); its corners are multiples of its
    # factor, because blocks start on multiples of every factor.
    windows = [(sx - job.x0, sy - job.y0, sx - job.x0 + factors[i] * source_px,
                sy - job.y0 + factors[i] * source_px) for i, _, sx, sy in job.tiles]
    buffer, _ = slide.read_region(job.x0 * to_level0, job.y0 * to_level0, job.x1 - job.x0, job.y1 - job.y0,
                                  finest, needed=windows)
    by_factor: dict[int, list[int]] = defaultdict(list)
    for n, (index, _, _, _) in enumerate(job.tiles):
        by_factor[factors[index]].append(n)
    out = []
    for step, members in sorted(by_factor.items()):
        # Reduce only the bounding box of this scale's windows, straight from the decoded buffer.
        bx0, by0 = min(windows[n][0] for n in members), min(windows[n][1] for n in members)
        bx1, by1 = max(windows[n][2] for n in members), max(windows[n][3] for n in members)
        reduced = box_reduce(buffer[by0:by1, bx0:bx1], step, inner, threads)
        for n in members:
            x, y = (windows[n][0] - bx0) // step, (windows[n][1] - by0) // step
            out.append((job.tiles[n][0], job.tiles[n][1], reduced[y:y + source_px, x:x + source_px]))
    encode: Callable[[np.ndarray], np.ndarray]
    if layout.jpeg_quality is not None:
        encode = partial(encode_jpeg, quality=layout.jpeg_quality)
    elif inner is not None:
        encode = np.ascontiguousarray  # the per-tile copies for the HDF5 chunks
    else:
        return out
    # Encoding (or copying) tiles on the block's threads too.
    patches = [patch for _, _, patch in out]
    stored = list(inner.map(encode, patches)) if inner is not None else [encode(p) for p in patches]
    return [(index, row, patch) for (index, row, _), patch in zip(out, stored)]


def box_reduce(image: np.ndarray, factor: int, pool: ThreadPoolExecutor | None = None,
               threads: int = 1) -> np.ndarray:
    """Exact k×k box mean of an H×W×3 uint8 image (each pixel within 0.5 of the true area mean).

    Every scale is reduced from the decoded pixels themselves, never from a coarser result, so
    rounding never accumulates. With ``pool``, horizontal bands are reduced on ``threads`` threads;
    each output pixel depends on its own k×k block only, so the result is the same.
    """
    if factor == 1:
        return image
    height, width = image.shape[0] // factor, image.shape[1] // factor
    if pool is None or threads < 2 or height < 2 * threads:
        return cv2.resize(image[:height * factor, :width * factor], (width, height), interpolation=cv2.INTER_AREA)
    out = np.empty((height, width, 3), np.uint8)
    bounds = np.linspace(0, height, threads + 1).astype(int)

    def band(rows: tuple[int, int]) -> None:
        top, bottom = rows
        cv2.resize(image[top * factor:bottom * factor, :width * factor], (width, bottom - top),
                   dst=out[top:bottom], interpolation=cv2.INTER_AREA)

    list(pool.map(band, zip(bounds[:-1], bounds[1:])))
    return out


def _empty_reason(mask_empty: bool, scales: list[_Scale], skipped: list[SkippedScale]) -> str:
    if not scales:
        return "no scale of the tile set can be served without upsampling: " + "; ".join(
            s.reason for s in skipped)
    if mask_empty:
        return "the tissue mask is empty (no tissue detected on this slide)"
    if not any(len(s.grid) for s in scales):
        return "no cell reaches the tile set's min_tissue fraction"
    return ""


def _ancestors(finest: np.ndarray, factor: int, grid_def: ScaleGrid) -> np.ndarray:
    """The distinct cells of a coarser grid that contain the given finest cells, in raster order."""
    cells = np.unique(finest // factor, axis=0).reshape(-1, 2)
    cells = cells[(cells[:, 0] < grid_def.cols) & (cells[:, 1] < grid_def.rows)]
    return cells[np.lexsort((cells[:, 0], cells[:, 1]))].astype(np.int64)


def _plan_scales_and_cells(slide: Slide, mask: TissueMask, params: TileSetParams
                           ) -> tuple[list[_Scale], list[SkippedScale]]:
    """Per servable scale: its grid, the kept cells and their tissue fractions."""
    plans, skipped = plan_scales(slide, params.scales)
    for skip in skipped:
        log.warning("%s: skipping %g mpp: %s", slide.slide_id, skip.target_mpp, skip.reason)
    scales: list[_Scale] = []
    finest_candidates = np.empty((0, 2), np.int64)
    for plan in plans:
        grid_def = make_grid(plan.target_mpp, plan.achieved_mpp, params.cell_px, slide.mpp, slide.dimensions)
        fractions = tissue_fractions(mask.mask, mask.mpp, grid_def)
        cells, available = select_cells(fractions, params.min_tissue, params.max_tiles_per_scale,
                                        _cell_rng(params.seed, slide.slide_id, plan.target_mpp))
        if params.nested and not scales:
            finest_candidates = np.argwhere(fractions >= params.min_tissue)[:, ::-1]  # (col, row)
        elif params.nested:
            # a nested scale keeps the ancestors of the kept finest cells, whatever their own tissue, so
            # what it could keep is the ancestors of every finest cell with enough tissue
            factor = plan.factor // scales[0].plan.factor
            cells = _ancestors(scales[0].grid, factor, grid_def)
            available = len(_ancestors(finest_candidates, factor, grid_def))
        level = slide.plan(plans[0].achieved_mpp)  # every scale is cut from the finest one's pixels
        scales.append(_Scale(plan, grid_def, cells, fractions[cells[:, 1], cells[:, 0]], available, {
            "target_mpp": plan.target_mpp, "mpp": plan.achieved_mpp, "read_level": level.level,
            "level_mpp": level.level_mpp, "scale_factor": plan.achieved_mpp / level.level_mpp,
            "interpolation": "area", "cell_px": params.cell_px, "source_px": params.source_px,
            "grid_cols": grid_def.cols, "grid_rows": grid_def.rows, "cell_um": grid_def.cell_um,
            "available": available, "kept": len(cells), "min_tissue": params.min_tissue,
            "nested": params.nested, "encoding": "raw" if params.jpeg_quality is None else "jpeg",
            "jpeg_quality": params.jpeg_quality or 0,
        }))
        log.info("%s: %g mpp (achieved %.4g, level %d): %d cells available, %d kept", slide.slide_id,
                 plan.target_mpp, plan.achieved_mpp, level.level, available, len(cells))
    if any(s.plan.factor == 0 for s in scales):
        raise ConfigError(f"tilesets.{params.name}: scales {params.scales} do not nest on slide "
                          f"'{slide.slide_id}' (each must be a whole multiple of the finest servable one)")
    return scales, skipped


def extract_tiles(slide_path: str | os.PathLike[str], slide_id: str, mask_path: str | os.PathLike[str],
                  out_path: str | os.PathLike[str], params: TileSetParams, sheet_mpp: float | None = None,
                  tolerance: float = DEFAULT_TOLERANCE, workers: int = 1, progress: bool = True,
                  config: dict[str, Any] | None = None,
                  max_plain_megapixels: float = DEFAULT_MAX_PLAIN_MEGAPIXELS) -> dict[str, Any]:
    """Write the tile store of one slide and tile set; return its per-scale counts.

    A slide whose mask records a refusal (not a brightfield scan) is refused here, before any output."""
    params.check()
    mask, _ = read_mask(mask_path)
    if mask.refused:
        raise SlideError(f"{mask.refused} (Recorded by the tissue_mask step in {mask_path}; no tiles are "
                         "extracted from this slide.)")
    with Slide(slide_path, slide_id, sheet_mpp, tolerance, max_plain_megapixels=max_plain_megapixels) as slide:
        slide.enable_fast_decode()
        scales, skipped = _plan_scales_and_cells(slide, mask, params)
        description = slide.describe()
        reason = _empty_reason(not mask.mask.any(), scales, skipped)
        counts = {f"{s.plan.target_mpp:g}": {"available": s.available, "kept": len(s.grid),
                                            "achieved_mpp": s.plan.achieved_mpp} for s in scales}
        root = {
            "slide_id": slide_id, "slide_path": str(slide_path), "slide": description,
            "mpp": description["mpp"], "mpp_source": description["mpp_source"],
            "tileset": params.name, "params": asdict(params), "magflow_version": __version__,
            "skipped_scales": [asdict(s) for s in skipped], "counts": counts, "empty_reason": reason,
            "provenance": provenance.collect(config=config, seeds={"tiles": params.seed}, precision="uint8"),
        }
        if reason:
            log.warning("%s: empty tile store: %s", slide_id, reason)
        contents = [ScaleContent(s.attrs, s.grid, s.grid_def.coords(s.grid), s.tissue) for s in scales]
        jobs = [] if reason else _plan_jobs(scales, params)
        layout = _Layout(scales[0].plan.achieved_mpp if scales else 1.0, [s.plan.factor for s in scales],
                         params.source_px, params.jpeg_quality)
        bar = tqdm(total=sum(len(j.tiles) for j in jobs), desc=f"{slide_id} [{params.name}]", unit="tile",
                   disable=not progress, mininterval=1.0)
        with StoreWriter(out_path, root, contents, params.source_px, params.jpeg_quality) as writer:
            if workers > 1 and len(jobs) >= workers:
                # Threads, not processes: decoding and resampling release the GIL, tiles need no
                # pickling back to the single HDF5 writer, and all threads share the slide handle and
                # its cache of decoded tiles, so a tile under two blocks' context windows is decoded once.
                with ThreadPoolExecutor(workers) as pool:
                    for tiles in pool.map(partial(_run_job, slide=slide, layout=layout), jobs):
                        _write(writer, tiles, bar)
            elif jobs:
                # Fewer blocks than workers (a small slide): the workers share each block instead,
                # decoding its stored tiles, reducing bands and copying tiles side by side.
                inner = ThreadPoolExecutor(workers) if workers > 1 else None
                slide.decode_on(inner, workers)
                try:
                    for job in jobs:
                        _write(writer, _run_job(job, slide, layout, inner, workers), bar)
                finally:
                    slide.decode_on(None, 1)
                    if inner is not None:
                        inner.shutdown()
        bar.close()
    return {"counts": counts, "skipped": [s.target_mpp for s in skipped], "empty_reason": reason}


def _write(writer: StoreWriter, tiles: list[tuple[int, int, np.ndarray]], bar: tqdm) -> None:
    for index, row, patch in tiles:
        writer.write(index, row, patch)
    bar.update(len(tiles))

