"""DINOv2 multi-crop views at a drawn magnification (``views: exact``): crop-and-resize on the device, then
augmentations. ``views: dinov2`` (DINOv2's random-resized crops of a source patch at the drawn mpp) is
:mod:`magflow.pretrain.dinov2_views`.

Magnification is drawn once per training item (per image, as DINOv2 with continuous magnification
sampling does): its two global and all its local crops share the item's mpp t, so the views of an
item differ in position, orientation and colour, never in scale.

With ``views: exact``, DINOv2's random *resized* crop would change the magnification silently (a crop of
area fraction a resized to 224 px sits at t·√a mpp), so a view of n px is always a window of
round(n·t/s) source pixels (s: the source patch's achieved mpp) at a random position inside the S×S
source patch, resized to n px: every view is at t (up to rounding the window to whole pixels: at most s/2n
mpp). The spread of DINOv2's crop scales is replaced by the
spread of the mpp distribution; a 96 px local covers (96/224)² = 18% of a 224 px global's area,
inside DINOv2's local range (0.05, 0.32). Then, as DINOv2: colour jitter (p 0.8), grayscale (p 0.2),
Gaussian blur (p 1.0 / 0.1 / 0.5 for the first global, second global, locals) and solarization on
the second global (p 0.2); horizontal flips become the 8 flips/90° rotations (tissue has no up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from magflow.errors import ConfigError
from magflow.pretrain import augment
from magflow.sampling.transforms import crop_and_resize_batch, crop_size


@dataclass(frozen=True)
class ViewConfig:
    global_size: int = 224
    local_size: int = 96
    n_local_crops: int = 8

    def check(self, source_px: int) -> None:
        if not 0 < self.local_size <= self.global_size <= source_px:
            raise ConfigError(f"views: need 0 < local_size ({self.local_size}) <= global_size ({self.global_size}) "
                              f"<= the stores' source patch size ({source_px})")
        if self.n_local_crops < 0:
            raise ConfigError(f"views: n_local_crops must be >= 0, got {self.n_local_crops}")


@dataclass
class Views:
    """Crops in view-major order: view v of item b is row v·B + b."""

    global_crops: torch.Tensor        # (2·B)×3×G×G, normalised
    local_crops: torch.Tensor | None  # (L·B)×3×l×l, normalised; None without local crops
    global_mpp: torch.Tensor          # 2·B float64: the item's drawn mpp (exact views: the mpp of each global crop)
    local_mpp: torch.Tensor           # L·B float64
    global_source_px: torch.Tensor    # 2·B: side of the stored window each global (dinov2: its source) was cut from
    local_source_px: torch.Tensor     # L·B
    global_effective_mpp: torch.Tensor | None = None  # 2·B float64: the mpp the view shows (geometric mean of its axes)
    local_effective_mpp: torch.Tensor | None = None   # L·B float64
    global_area: torch.Tensor | None = None  # dinov2 views: 2·B float64 crop-area fraction of the source patch
    local_area: torch.Tensor | None = None   # L·B float64
    global_box: torch.Tensor | None = None   # dinov2 views: 2·B×4 long (top, left, height, width) in source px
    local_box: torch.Tensor | None = None    # L·B×4 long


def view_mpps(target_mpp: torch.Tensor, source_mpp: torch.Tensor, global_size: int, source_px: int) -> torch.Tensor:
    """The mpp every view of an item is cut at: the target, kept within what its source patch holds.

    ``global_size`` is the largest window's output size: the global views' (exact views), or the
    source patch's ``source_size`` (dinov2 views, whose crops are cut from it).
    A target is clamped to [s, S·s/G] for a source at achieved mpp s: with nominal scales this never
    binds, but a store whose achieved mpp is a little off nominal (0.499 for 0.5) could otherwise need
    a 449 px window in a 448 px patch, or a resize up by a fraction of a percent. The clamped value is
    the recorded one, so recorded mpps are always the true ones.
    """
    return torch.minimum(torch.maximum(target_mpp, source_mpp), source_mpp * source_px / global_size)


def _cut(images: torch.Tensor, source_mpp: torch.Tensor, mpp: torch.Tensor, size: int, n_views: int,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n_views random windows per item at its mpp, resized to ``size`` px, in [0, 1]; and the window sides."""
    sources, mpps = source_mpp.repeat(n_views), mpp.repeat(n_views)
    crops = crop_and_resize_batch(images.repeat(n_views, 1, 1, 1), sources, mpps, size, position="random",
                                  generator=generator, out_dtype=torch.float32, tol=0.0)
    windows = torch.tensor([crop_size(size, s, t, tol=0.0) for s, t in zip(sources.tolist(), mpps.tolist())])
    return crops.div_(255), windows


def augment_views(crops: torch.Tensor, generator: torch.Generator, blur: float, solarize: float,
                  dihedral: bool = True) -> torch.Tensor:
    """DINOv2's augmentations of float views in [0, 1], normalised: a random flip/rotation (unless
    ``dihedral`` is False: photometric only), colour jitter, grayscale, blur with probability ``blur``
    and solarization with probability ``solarize``."""
    if dihedral:
        crops = augment.dihedral(crops, generator)
    crops = augment.color_jitter(crops, generator)
    crops = augment.random_grayscale(crops, generator)
    crops = augment.gaussian_blur(crops, generator, p=blur)
    if solarize > 0:
        crops = augment.solarize(crops, generator, p=solarize)
    return augment.normalize(crops)


def make_views(images: torch.Tensor, source_mpp: torch.Tensor, mpp: torch.Tensor, config: ViewConfig,
               generator: torch.Generator) -> Views:
    """Two global and ``n_local_crops`` local views of each B×3×S×S uint8 source patch, at ``mpp`` (B).

    ``source_mpp`` is each patch's achieved mpp and ``mpp`` the (already clamped, see :func:`view_mpps`)
    mpp of the item's views; both are CPU float64 vectors. ``generator`` (CPU) draws every position and
    augmentation, so a seeded generator gives the same views on any device.
    """
    batch = images.shape[0]
    globals_, global_px = _cut(images, source_mpp, mpp, config.global_size, 2, generator)
    first = augment_views(globals_[:batch], generator, blur=1.0, solarize=0.0)
    second = augment_views(globals_[batch:], generator, blur=0.1, solarize=0.2)
    local_crops, local_px = None, torch.zeros(0, dtype=torch.long)
    if config.n_local_crops:
        local_crops, local_px = _cut(images, source_mpp, mpp, config.local_size, config.n_local_crops, generator)
        local_crops = augment_views(local_crops, generator, blur=0.5, solarize=0.0)
    return Views(global_crops=torch.cat([first, second]), local_crops=local_crops,
                 global_mpp=mpp.repeat(2), local_mpp=mpp.repeat(config.n_local_crops),
                 global_source_px=global_px, local_source_px=local_px,
                 global_effective_mpp=mpp.repeat(2), local_effective_mpp=mpp.repeat(config.n_local_crops))
