"""MAD's views: the teacher sees a context tile, the student also sees aligned tiles of the next magnification.

For a transition item (a parent tile at the coarse scale and n of its children at the next finer one):

- teacher: 2 global views of the whole parent cell, DINOv2's global augmentations (a random flip or
  90° rotation, colour jitter, grayscale, blur 1.0 / 0.1, solarization on the second);
- student: the same 2 global views, plus the n children as local views: whole cells at their own
  scale (native resolution, never a resized crop of the parent) with photometric augmentation only
  (colour jitter, grayscale, blur 0.5), so 2 + n = 6 views per item against DINOv2's 10.

A view is a whole cell (the central cell_px of its source patch). When ``global_size`` equals the
tile set's ``cell_px`` (224 px in the paper and in ``tilesets.mad``) cells are used as they are;
a smaller ``global_size`` (the tiny demo) resizes every cell alike (antialiased bilinear), so parent
and child keep their factor in mpp and their alignment, both at mpp · cell_px / global_size.

A standalone item gets DINOv2's multi-crop views (2 globals of ``global_size``, ``n_local_crops``
locals of ``local_size``, :func:`magflow.pretrain.views.make_views`) at that same mpp, so its
globals are its whole cell and its locals smaller windows of it.

Globals are view-major over the batch (view v of item b is row v·B + b, transition items first);
each local group is view-major over its own items.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from magflow.errors import ConfigError
from magflow.pretrain.views import ViewConfig, augment_views, make_views


@dataclass
class MadViews:
    global_crops: torch.Tensor          # (2·B)×3×G×G normalised: transition items, then standalone items
    children: torch.Tensor | None       # (n·T)×3×G×G normalised: child slot j of transition item i is row j·T + i
    standalone_locals: torch.Tensor | None  # (L·S)×3×l×l normalised
    global_mpp: torch.Tensor            # 2·B float64: the mpp of each global view
    children_mpp: torch.Tensor          # n·T
    standalone_local_mpp: torch.Tensor  # L·S
    n_transition: int                   # T; the batch has B = T + S items
    item_mpp: torch.Tensor              # B: each item's finest views (a transition's children, a standalone tile)


def check_sizes(config: ViewConfig, cell_px: int) -> None:
    if not 0 < config.local_size <= config.global_size <= cell_px:
        raise ConfigError(f"MAD views: need 0 < train.local_size ({config.local_size}) <= train.global_size "
                          f"({config.global_size}) <= the MAD tile set's cell_px ({cell_px}); views are whole "
                          "cells, never upsampled")


def cells(images: torch.Tensor, cell_px: int, size: int) -> torch.Tensor:
    """B×3×S×S uint8 source patches → their central cell_px cells at ``size`` px, float in [0, 1]."""
    margin = (images.shape[-1] - cell_px) // 2
    x = images[..., margin:margin + cell_px, margin:margin + cell_px].float()
    if size != cell_px:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.div_(255)


def make_mad_views(batch: dict[str, torch.Tensor], cell_px: int, config: ViewConfig, generator: torch.Generator,
                   device: torch.device | None = None) -> MadViews:
    """The views of one MAD batch (see :class:`magflow.pretrain.mad_data.MadSource`); ``generator`` (CPU)
    draws every augmentation, so a seeded generator gives the same views on any device."""
    device = device or batch["parents"].device
    size, scale = config.global_size, cell_px / config.global_size
    parents, kids = batch["parents"], batch["children"]
    n_transition, n = parents.shape[0], kids.shape[1]
    first = second = children = None
    children_mpp = torch.zeros(0, dtype=torch.float64)
    if n_transition:
        context = cells(parents.to(device, non_blocking=True), cell_px, size)
        first = augment_views(context, generator, blur=1.0, solarize=0.0)
        second = augment_views(context, generator, blur=0.1, solarize=0.2)
        fine = kids.to(device, non_blocking=True).transpose(0, 1).flatten(0, 1)  # view-major: slot j, item i
        children = augment_views(cells(fine, cell_px, size), generator, blur=0.5, solarize=0.0,
                                 dihedral=False)
        children_mpp = (batch["fine_mpp"] * scale).repeat(n)
    standalone = batch["standalone"]
    locals_, local_mpp = None, torch.zeros(0, dtype=torch.float64)
    globals_ = [first, None, second, None]
    stand_mpp = batch["standalone_mpp"] * scale
    if standalone.shape[0]:
        views = make_views(standalone.to(device, non_blocking=True), batch["standalone_mpp"], stand_mpp, config,
                           generator)
        half = standalone.shape[0]
        globals_[1], globals_[3] = views.global_crops[:half], views.global_crops[half:]
        locals_, local_mpp = views.local_crops, views.local_mpp
    coarse_mpp = batch["coarse_mpp"] * scale
    return MadViews(
        global_crops=torch.cat([v for v in globals_ if v is not None]),
        children=children, standalone_locals=locals_,
        global_mpp=torch.cat([coarse_mpp, stand_mpp]).repeat(2),
        children_mpp=children_mpp, standalone_local_mpp=local_mpp, n_transition=n_transition,
        item_mpp=torch.cat([batch["fine_mpp"] * scale, stand_mpp]))
