"""The view protocol: which pixels of the eval tile store each tile is embedded from, at every mpp.

**Tiles.** A tile is one kept cell of the *anchor* scale of a slide's store, by default the finest
scale of the tile set (0.25 mpp for ``eval``: a cell of C = 224 px covers 56 µm). Its *centre* P is
the anchor cell's centre, in µm from the slide's top-left corner, the origin every grid shares. The
same tiles, with the same ids, are embedded at every target mpp.

**Views.** At a target mpp t, a tile's view is C px at t, centred on P:

1. *Source scale* s, by the ``resample`` setting:

   - ``finest`` (the default): the finest stored scale, for every t. Every view at every mpp is made
     by the same function from the same pixels, as the BRACS-MS benchmark makes every mpp from its
     0.25 mpp image, so no mpp is favoured by the path its pixels took.
   - ``nearest_scale``: the coarsest stored scale whose nominal mpp is ≤ t: a standard mpp is read at
     its own scale, 0.375 from 0.25, 0.75 from 0.5, 1.5 from 1.0. A standard mpp is then a raw crop of
     a stored scale (which extraction made by an exact area reduction) while an intermediate one is
     resized, so the path itself draws a sawtooth over mpp, even for an untrained network; kept to
     reproduce earlier embeddings and for stores made for it.

   No scale ≤ t: the tile is skipped at t (the slide would have to be upsampled).
2. *Window.* w = max(C, round(C·t/s_a)) source pixels, s_a being the scale's achieved mpp, so a
   view is never upsampled. In pixels of the source grid, P sits at P_s = P/s_a and the window's
   top-left at round(P_s − w/2). With the default numbers P_s and w/2 are whole, so the window is
   centred exactly; otherwise to within half a source pixel (``centre_error_px`` records it).
3. *Patch.* The window must lie wholly inside the S px source patch of one kept cell of scale s. The
   patch of cell k spans [k·C − m, k·C + C + m) with m = (S − C)/2 (it is centred on its cell, see
   ``magflow.preprocess.store``), so the candidates are index arithmetic on the nested grids. Of the
   kept cells whose patch holds the window, the one whose centre is nearest P is used: the cell that
   contains P when it qualifies (for a finer anchor, its ancestor at scale s).
4. *Resize.* When w = C the window is the view; else it is resized to C px by :func:`resize_window`,
   one antialiased bilinear pass (:data:`VIEW_FILTER`, the filter of ``crop_and_resize_batch``). The
   view's achieved mpp is s_a·w/C, recorded per tile.
5. *Skips.* When no kept patch holds the window, the tile is invalid at t: it keeps its row, its
   features stay zero, ``valid`` is False and it is counted. Nothing is padded or upsampled.

**Geometry of ``finest``.** The anchor is the finest scale f, so the window is centred on its own
cell and a store serves every tile at t exactly when S ≥ w = C·t/f: for C = 224 from 0.25 mpp, 1792
px at 2.0 mpp (a 448 µm field). The multi-scale ``eval`` tile set of earlier versions (S = 512 at
every scale) holds only t ≤ 0.5 that way, and its finest cells are capped and sparse, so a mosaic of
neighbouring finest cells is not there either. The ``eval`` tile set therefore stores only the
finest scale, with S = C·max(t)/f (1792 px; ``jpeg_quality`` keeps it small): one patch per tile,
read once, from which all its views are cut. Reading the slide itself at embed time would also work,
but would give the embed step a second pixel source besides the tile store.

**Geometry of ``nearest_scale``.** A finest-scale anchor centre lies C(f−1)/(2f) source pixels from
the centre of its ancestor at a scale f times coarser, at most, so a store serves every tile at t
exactly when S ≥ w + C(f−1)/f (:func:`min_source_px`). For C = 224, a 0.25 mpp anchor and the 7
profile mpps this asks for S ≥ 504 (1.5 mpp from 1.0: 336 + 168). With S = 392 every tile is served
at 0.25, 0.375, 0.5 and 1.0 mpp, 36 of every 64 at 2.0, 4 of every 16 at 1.5 and none at 0.75.

**Why the finest anchor.** A coarser cell's centre is a corner of every finer grid, C/2 px from the
nearest finer cell centres, so its fine views need S ≥ w + C (560 px for 0.375 mpp around a 1.0 mpp
centre), and the finest scale's C px view at P needs a patch of that scale in any case. A finest
anchor is also the smallest tissue footprint (56 µm), which is what a tile label describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from magflow.errors import ConfigError, UpsamplingError
from magflow.preprocess.store import TileStore, group_name
from magflow.sampling.transforms import pick_source_scale

PROFILE_MPPS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)
FINEST = "finest"
NEAREST_SCALE = "nearest_scale"
RESAMPLE_MODES = (FINEST, NEAREST_SCALE)
VIEW_FILTER = "bilinear, antialiased (torch.nn.functional.interpolate, align_corners=False)"
NO_FILTER = "none: the C px window is the view"


@dataclass(frozen=True)
class Anchors:
    """The tiles of one slide: the kept cells of its anchor scale, in store row order."""

    anchor_mpp: float
    achieved_mpp: float  # the anchor scale's achieved mpp (µm per pixel)
    cell_px: int
    grid: np.ndarray     # (N, 2) col, row on the anchor grid
    coords: np.ndarray   # (N, 2) level-0 x, y of the cell's top-left (CLAM style)

    def __len__(self) -> int:
        return len(self.grid)

    @property
    def cell_um(self) -> float:
        return self.cell_px * self.achieved_mpp

    def boxes_um(self) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 of each anchor cell in µm from the slide's top-left corner."""
        start = self.grid.astype(np.float64) * self.cell_um
        return np.concatenate([start, start + self.cell_um], axis=1)


@dataclass(frozen=True)
class ViewPlan:
    """Where each tile of one slide is cut from at one target mpp (rows follow the anchors)."""

    target_mpp: float
    cell_px: int               # C: side of the view
    source_mpp: float | None   # nominal mpp of the source scale; None when no scale serves t
    source_achieved: float     # achieved mpp of the source scale (nan when none)
    crop_px: int               # w: side of the source window
    rows: np.ndarray           # (N,) row of the source patch in the source scale's group, −1 if invalid
    offsets: np.ndarray        # (N, 2) x, y of the window's top-left inside that patch
    centre_error_px: float     # largest |window centre − P| over the valid tiles, in source pixels
    reason: str = ""           # why tiles are skipped, when some are
    resample: str = FINEST     # how the source scale was chosen (RESAMPLE_MODES)

    @property
    def valid(self) -> np.ndarray:
        return self.rows >= 0

    @property
    def group(self) -> str:
        return group_name(self.source_mpp) if self.source_mpp is not None else ""

    @property
    def view_mpp(self) -> float:
        """The achieved mpp of the views, s_a·w/C (nan when no scale serves the target)."""
        return self.source_achieved * self.crop_px / self.cell_px if self.source_mpp is not None else math.nan

    @property
    def filter(self) -> str:
        """What turns the window into the view: :data:`VIEW_FILTER`, or nothing when w = C."""
        return VIEW_FILTER if self.crop_px != self.cell_px else NO_FILTER


def default_anchor_mpp(store: TileStore) -> float:
    """The finest scale of the store's tile set (from its parameters), else of the store itself."""
    params = store.json_attr("params") if "params" in store.attrs else {}
    scales = params.get("scales") or store.scales
    if not scales:
        raise ConfigError(f"{store.path}: the store has no scales, so it has no anchor scale")
    return float(min(scales))


def read_anchors(store: TileStore, anchor_mpp: float) -> Anchors | None:
    """The anchor cells of a store, or None when the store has no group at ``anchor_mpp``."""
    if group_name(anchor_mpp) not in store.h5:
        return None
    group = store.group(anchor_mpp)
    return Anchors(anchor_mpp, float(group.attrs["mpp"]), int(group.attrs["cell_px"]),
                   group["grid"][...].astype(np.int64), group["coords"][...].astype(np.int64))


def window_px(cell_px: int, source_achieved: float, target_mpp: float) -> int:
    """w = max(C, round(C·t/s_a)): the source window that becomes the C px view (never smaller than C)."""
    return max(cell_px, round(cell_px * target_mpp / source_achieved))


def _centres(store: TileStore, anchors: Anchors, source_mpp: float) -> np.ndarray:
    """(N, 2) anchor centres in pixels of the source scale's grid, by exact nesting factors."""
    centre = anchors.grid.astype(np.float64) + 0.5
    if source_mpp >= anchors.anchor_mpp:
        return centre * anchors.cell_px / store.factor(source_mpp, anchors.anchor_mpp)
    return centre * anchors.cell_px * store.factor(anchors.anchor_mpp, source_mpp)


def _invalid(n: int, target: float, cell: int, reason: str, resample: str, source: float | None = None,
             achieved: float = math.nan, w: int = 0) -> ViewPlan:
    return ViewPlan(target, cell, source, achieved, w, np.full(n, -1, np.int64), np.zeros((n, 2), np.int64), 0.0,
                    reason, resample)


def source_scale(scales: list[float], target_mpp: float, resample: str = FINEST) -> float:
    """The stored scale that views at ``target_mpp`` are cut from (protocol step 1); refuses upsampling."""
    if resample not in RESAMPLE_MODES:
        raise ConfigError(f"embed.resample: '{resample}' is not one of {', '.join(RESAMPLE_MODES)}")
    source = pick_source_scale(target_mpp, scales, tol=0.0)
    return min(scales) if resample == FINEST else source


def plan_views(store: TileStore, anchors: Anchors, target_mpp: float, resample: str = FINEST) -> ViewPlan:
    """Where every anchor tile's view at ``target_mpp`` is cut from (protocol steps 1–3)."""
    n = len(anchors)
    try:
        source = source_scale(store.scales, target_mpp, resample)
    except UpsamplingError as refusal:
        return _invalid(n, target_mpp, anchors.cell_px,
                        f"no stored scale at or finer than {target_mpp:g} mpp ({refusal})", resample)
    group = store.group(source)
    achieved, cell, size = float(group.attrs["mpp"]), int(group.attrs["cell_px"]), int(group.attrs["source_px"])
    if cell != anchors.cell_px:
        raise ConfigError(f"{store.path}: scale {source:g} has {cell} px cells, the anchor scale {anchors.cell_px}")
    w = window_px(cell, achieved, target_mpp)
    if w > size:
        return _invalid(n, target_mpp, cell, f"a {w} px window at {source:g} mpp does not fit in its {size} px source "
                        "patches", resample, source, achieved, w)
    margin = (size - cell) // 2
    centres = _centres(store, anchors, source)
    top_left = np.floor(centres - w / 2 + 0.5).astype(np.int64)
    # cell k's patch holds the window iff k·C − m ≤ top_left and top_left + w ≤ k·C + C + m
    k_lo = -((margin + cell - w - top_left) // cell)   # ceil((top_left + w − C − m) / C)
    k_hi = (top_left + margin) // cell
    lookup = store.lookup(source)
    rows = np.full(n, -1, np.int64)
    best = np.full(n, np.inf)
    chosen = np.zeros((n, 2), np.int64)
    span = int(max(1, (k_hi - k_lo).max(initial=0) + 1))
    for dy in range(span):
        for dx in range(span):
            k = k_lo + np.array([dx, dy])
            ok = (k <= k_hi).all(axis=1) & (k >= 0).all(axis=1)
            ok &= (k[:, 0] < lookup.shape[1]) & (k[:, 1] < lookup.shape[0])
            found = np.full(n, -1, np.int64)
            found[ok] = lookup[k[ok, 1], k[ok, 0]]
            distance = (((k + 0.5) * cell - centres) ** 2).sum(axis=1)
            better = (found >= 0) & (distance < best)
            rows[better], best[better], chosen[better] = found[better], distance[better], k[better]
    offsets = np.where(rows[:, None] >= 0, top_left - (chosen * cell - margin), 0)
    valid = rows >= 0
    error = float(np.abs(top_left + w / 2 - centres)[valid].max(initial=0.0))
    return ViewPlan(target_mpp, cell, source, achieved, w, rows, offsets.astype(np.int64), error,
                    _skip_reason(valid, (k_hi < k_lo).any(axis=1), source, size, w,
                                 min_source_px(cell, anchors.anchor_mpp, source, target_mpp, achieved)), resample)


def _skip_reason(valid: np.ndarray, too_small: np.ndarray, source: float, size: int, w: int, need: int) -> str:
    parts = []
    if too_small.any():
        parts.append(f"{int(too_small.sum())} tiles: their {w} px window at {source:g} mpp, centred on the tile, "
                     f"reaches beyond every {size} px source patch (serving every tile needs source_px ≥ {need})")
    missing = int((~valid & ~too_small).sum())
    if missing:
        parts.append(f"{missing} tiles: the {source:g} mpp cells whose source patches would hold their window were "
                     "not kept (too little tissue, the tile set's per-scale cap, or beyond the slide's edge)")
    return f"of {len(valid)} tiles, " + "; ".join(parts) if parts else ""


def min_source_px(cell_px: int, anchor_mpp: float, source_mpp: float, target_mpp: float,
                  source_achieved: float | None = None) -> int:
    """The smallest source patch S (S − C even) that holds the window of every anchor tile at t."""
    w = window_px(cell_px, source_achieved or source_mpp, target_mpp)
    if source_mpp >= anchor_mpp:
        factor = round(source_mpp / anchor_mpp)
        need = w + math.ceil(cell_px * (factor - 1) / factor)
    else:
        need = w + cell_px  # a coarser anchor's centre is a corner of the finer grid
    return need + (need - cell_px) % 2


def cut_window(patch: np.ndarray, offset: np.ndarray, w: int) -> np.ndarray:
    """The w×w window at ``offset`` (x, y) of an S×S×3 source patch."""
    x, y = int(offset[0]), int(offset[1])
    return patch[y:y + w, x:x + w]


def resize_window(window: np.ndarray, cell_px: int) -> torch.Tensor:
    """A w×w×3 uint8 window as the 3×C×C float view in [0, 1] (protocol step 4, the one resize of every view)."""
    x = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1).float()
    if x.shape[-1] != cell_px:
        x = F.interpolate(x[None], size=(cell_px, cell_px), mode="bilinear", align_corners=False, antialias=True)[0]
    return x.div_(255)
