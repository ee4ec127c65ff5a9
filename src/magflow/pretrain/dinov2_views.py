"""DINOv2's random-resized multi-crop on a source patch at the drawn magnification (``views: dinov2``).

As in continuous magnification sampling's DINOv2 recipe: each item's mpp t is drawn from the sampler,
a ``source_size`` px source patch at t is cut at a random position of the stored tile (crop-and-resize
from the next finer stored scale, never upsampled), and DINOv2's multi-crop runs on it. Each view is a
random-resized crop of that source, drawn as torchvision's ``RandomResizedCrop`` does: an area fraction
uniform in the view's scale range and an aspect ratio log-uniform in [3/4, 4/3], up to 10 tries until
the box fits, else the central crop (the whole square source). The box is resized to the view size
with the antialiased bicubic filter (Keys' cubic, a = -0.5, widened by the shrink factor when
shrinking: PIL's bicubic resize, and ``F.interpolate(mode="bicubic", antialias=True)``), then comes a
flip/rotation and DINOv2's colour augmentations (:func:`magflow.pretrain.views.augment_views`).

Unlike the ``exact`` views, the crop changes the magnification a view shows: a box of w×h source px
resized to n×n px shows t·w/n mpp across and t·h/n mpp down (and is upsampled when smaller than n).
The record keeps each view's box, its area fraction a = w·h/S² of the S px source, and its effective
mpp t·√(w·h)/n = t·√a·S/n, the geometric mean of both axes (unchanged by the 90° rotations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from magflow.errors import ConfigError
from magflow.pretrain.views import Views, augment_views
from magflow.sampling.transforms import crop_and_resize_batch, crop_size

RATIO = (3 / 4, 4 / 3)  # DINOv2's (torchvision's) aspect ratio range
TRIES = 10              # box draws before the central crop
CUBIC_A = -0.5          # PIL's bicubic; also torch's antialiased bicubic


@dataclass(frozen=True)
class Dinov2ViewConfig:
    global_size: int = 224
    local_size: int = 96
    n_local_crops: int = 8
    source_size: int = 256
    global_scale: tuple[float, float] = (0.35, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.35)

    def check(self) -> None:
        if not 0 < self.local_size <= self.global_size <= self.source_size:
            raise ConfigError(f"views: need 0 < train.local_size ({self.local_size}) <= train.global_size "
                              f"({self.global_size}) <= train.source_size ({self.source_size})")
        if self.n_local_crops < 0:
            raise ConfigError(f"views: n_local_crops must be >= 0, got {self.n_local_crops}")
        for key, (lo, hi) in (("global_crops_scale", self.global_scale), ("local_crops_scale", self.local_scale)):
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"views: train.{key} must be area fractions 0 < lo <= hi <= 1, got {[lo, hi]}")


def random_resized_boxes(n: int, size: int, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """n boxes (top, left, height, width) in a size×size image, each drawn as ``RandomResizedCrop`` draws one.

    Every box draws all its tries (a fixed number of draws per call, so later draws never shift).
    """
    lo, hi = scale
    area = size * size * (lo + (hi - lo) * torch.rand(n, TRIES, generator=generator, dtype=torch.float64))
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, TRIES, generator=generator, dtype=torch.float64))
    widths = torch.round(torch.sqrt(area * aspect)).long()
    heights = torch.round(torch.sqrt(area / aspect)).long()
    fits = (widths > 0) & (widths <= size) & (heights > 0) & (heights <= size)
    first, found, rows = fits.long().argmax(dim=1), fits.any(dim=1), torch.arange(n)
    # the central crop of a square image within the ratio range is the whole image
    width = torch.where(found, widths[rows, first], size)
    height = torch.where(found, heights[rows, first], size)
    top = (torch.rand(n, generator=generator, dtype=torch.float64) * (size - height + 1)).long()
    left = (torch.rand(n, generator=generator, dtype=torch.float64) * (size - width + 1)).long()
    return torch.stack([top, left, height, width], dim=1)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = ``CUBIC_A``."""
    a, x = CUBIC_A, x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = a * (((x - 5) * x + 8) * x - 4)
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """N×out×size matrices that resample the segment [start, start + length) of a ``size`` px axis to ``out``
    px with the antialiased bicubic filter; taps outside the segment are dropped and each row renormalised."""
    kwargs = {"device": start.device, "dtype": torch.float32}
    start, length = start.to(**kwargs).view(-1, 1, 1), length.to(**kwargs).view(-1, 1, 1)
    step = length / out
    centre = start + (torch.arange(out, **kwargs).view(1, -1, 1) + 0.5) * step
    pixel = torch.arange(size, **kwargs).view(1, 1, -1) + 0.5
    weights = _cubic((pixel - centre) / step.clamp(min=1.0))
    weights = weights * ((pixel > start) & (pixel < start + length))
    return weights / weights.sum(dim=2, keepdim=True)


def resized_crops(sources: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(V·B)×3×size×size crops of the B×3×S×S float ``sources``, clamped to [0, 1]; box row v·B + b is cut
    from source b. One separable batched matmul per axis, whatever the boxes' sizes."""
    batch, side = sources.shape[0], sources.shape[-1]
    boxes = boxes.to(sources.device)
    rows = resize_weights(boxes[:, 0], boxes[:, 2], side, size).view(-1, batch, 1, size, side)
    cols = resize_weights(boxes[:, 1], boxes[:, 3], side, size).view(-1, batch, 1, size, side)
    out = rows.to(sources.dtype) @ sources.unsqueeze(0) @ cols.to(sources.dtype).transpose(-1, -2)
    return out.flatten(0, 1).clamp_(0, 1)


def _crop_record(boxes: torch.Tensor, mpp: torch.Tensor, source_size: int, size: int) -> tuple[torch.Tensor, ...]:
    """Each view's crop-area fraction and effective mpp (geometric mean over its axes); ``mpp`` per view."""
    pixels = (boxes[:, 2] * boxes[:, 3]).to(torch.float64)
    return pixels / source_size**2, mpp * pixels.sqrt() / size


def make_dinov2_views(images: torch.Tensor, source_mpp: torch.Tensor, mpp: torch.Tensor, config: Dinov2ViewConfig,
                      generator: torch.Generator) -> Views:
    """Two global and ``n_local_crops`` local random-resized crops of a ``source_size`` px source at ``mpp``
    (B) cut from each B×3×S×S uint8 stored patch.

    ``source_mpp`` is each stored patch's achieved mpp and ``mpp`` the item's drawn mpp, already clamped
    so the source window fits (see :func:`magflow.pretrain.views.view_mpps` with ``source_size``); both
    are CPU float64 vectors. ``generator`` (CPU) draws every position, box and augmentation, so a seeded
    generator gives the same views on any device.
    """
    batch, source = images.shape[0], config.source_size
    sources = crop_and_resize_batch(images, source_mpp, mpp, source, position="random", generator=generator,
                                    out_dtype=torch.float32, tol=0.0).div_(255)
    windows = torch.tensor([crop_size(source, s, t, tol=0.0) for s, t in zip(source_mpp.tolist(), mpp.tolist())])
    global_box = random_resized_boxes(2 * batch, source, config.global_scale, generator)
    globals_ = resized_crops(sources, global_box, config.global_size)
    first = augment_views(globals_[:batch], generator, blur=1.0, solarize=0.0)
    second = augment_views(globals_[batch:], generator, blur=0.1, solarize=0.2)
    global_area, global_effective = _crop_record(global_box, mpp.repeat(2), source, config.global_size)
    local_crops, local_box = None, torch.zeros(0, 4, dtype=torch.long)
    if config.n_local_crops:
        local_box = random_resized_boxes(config.n_local_crops * batch, source, config.local_scale, generator)
        local_crops = augment_views(resized_crops(sources, local_box, config.local_size), generator, blur=0.5,
                                    solarize=0.0)
    local_area, local_effective = _crop_record(local_box, mpp.repeat(config.n_local_crops), source,
                                               config.local_size)
    return Views(global_crops=torch.cat([first, second]), local_crops=local_crops,
                 global_mpp=mpp.repeat(2), local_mpp=mpp.repeat(config.n_local_crops),
                 global_source_px=windows.repeat(2), local_source_px=windows.repeat(config.n_local_crops),
                 global_effective_mpp=global_effective, local_effective_mpp=local_effective,
                 global_area=global_area, local_area=local_area, global_box=global_box, local_box=local_box)
