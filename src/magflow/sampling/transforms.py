"""Crop-and-resize: synthesise a patch at target mpp t from a source patch at mpp s <= t.

A C-px output at t covers C·t µm, i.e. round(C·t/s) source pixels; that square is cropped and
resized to C with an antialiased bilinear (triangle) filter, so the field of view is kept.

Two implementations: :func:`crop_and_resize` (CPU, PIL, one patch) and
:func:`crop_and_resize_batch` (torch, a batch with one target per patch, on any device). On
uint8 input they agree to within 1 grey level per pixel and 0.25 on average (PIL rounds to
uint8 between its horizontal and vertical passes; torch keeps floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image

from magflow.errors import ConfigError, UpsamplingError

Position = Literal["center", "random"]
PatchT = TypeVar("PatchT", NDArray[np.uint8], torch.Tensor)


def crop_size(out_size: int, source_mpp: float, target_mpp: float, tol: float = 0.02) -> int:
    """Side in source pixels, round(C·t/s), of the crop that becomes ``out_size`` px at ``target_mpp``.

    Refuses targets finer than the source beyond ``tol`` (relative): magflow never upsamples.
    """
    if not (source_mpp > 0 and target_mpp > 0 and out_size > 0):
        raise ConfigError(
            f"crop-and-resize needs positive mpps and size, got source mpp {source_mpp}, "
            f"target mpp {target_mpp}, output size {out_size}"
        )
    if target_mpp < source_mpp * (1 - tol):
        raise UpsamplingError(
            f"target mpp {target_mpp:g} is finer than source mpp {source_mpp:g} beyond the "
            f"upsampling tolerance of {tol:g} (finest allowed target {source_mpp * (1 - tol):g}); "
            "use a source scale whose mpp is at most the target"
        )
    return round(out_size * target_mpp / source_mpp)


def _check_fits(crop: int, height: int, width: int, source_mpp: float, target_mpp: float, out_size: int) -> None:
    if crop > min(height, width):
        raise ConfigError(
            f"a {out_size} px patch at {target_mpp:g} mpp needs a {crop} px crop, but the source "
            f"patch at {source_mpp:g} mpp is {height}x{width} px; the coarsest target it serves is "
            f"{source_mpp * min(height, width) / out_size:g} mpp: use a coarser source scale, "
            "larger source patches or a smaller sampling range"
        )


def _check_position(position: str) -> None:
    if position not in ("center", "random"):
        raise ConfigError(f"crop position {position!r} is not allowed; use 'center' or 'random'")


def crop_and_resize(
    patch: PatchT,
    source_mpp: float,
    target_mpp: float,
    out_size: int,
    *,
    position: Position = "center",
    rng: int | np.random.Generator | None = None,
    tol: float = 0.02,
) -> PatchT:
    """CPU crop-and-resize of one uint8 patch: an (H, W) or (H, W, C) array, or a (C, H, W) tensor.

    Returns the same kind of object with spatial size ``out_size``. ``rng`` seeds the random crop.
    """
    _check_position(position)
    is_tensor = isinstance(patch, torch.Tensor)
    array = patch.permute(1, 2, 0).numpy() if is_tensor else np.asarray(patch)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ConfigError(
            f"crop_and_resize takes uint8 patches of shape (H, W[, C]) or tensors (C, H, W), "
            f"got {array.dtype} with shape {tuple(patch.shape)}"
        )
    height, width = array.shape[:2]
    crop = crop_size(out_size, source_mpp, target_mpp, tol)
    _check_fits(crop, height, width, source_mpp, target_mpp, out_size)
    if position == "center":
        top, left = (height - crop) // 2, (width - crop) // 2
    else:
        gen = np.random.default_rng(rng)
        top, left = int(gen.integers(0, height - crop + 1)), int(gen.integers(0, width - crop + 1))
    window = array[top : top + crop, left : left + crop]
    squeeze = window.ndim == 3 and window.shape[2] == 1
    image = Image.fromarray(np.ascontiguousarray(window[..., 0] if squeeze else window))
    # reducing_gap=None: one exact antialiased pass, the same filter torch uses with antialias=True.
    out = np.asarray(image.resize((out_size, out_size), Image.Resampling.BILINEAR, reducing_gap=None))
    if squeeze:
        out = out[..., None]
    if is_tensor:
        return torch.from_numpy(out.reshape(out_size, out_size, -1).copy()).permute(2, 0, 1)
    return out


def crop_and_resize_batch(
    patches: torch.Tensor,
    source_mpp: float | Sequence[float] | torch.Tensor,
    target_mpps: Sequence[float] | torch.Tensor,
    out_size: int,
    *,
    position: Position = "center",
    generator: torch.Generator | None = None,
    out_dtype: torch.dtype | None = None,
    tol: float = 0.02,
) -> torch.Tensor:
    """Batched crop-and-resize of (B, C, H, W) patches, one target mpp per patch, on their device.

    Patches with equal crop sizes share one ``F.interpolate(antialias=True)`` call, so the cost
    grows with the number of distinct crop sizes, not the batch size. The output is
    (B, C, out_size, out_size) in ``out_dtype`` (default: the input dtype; uint8 is rounded).
    ``generator`` (a CPU generator) seeds the random crop positions.
    """
    _check_position(position)
    if patches.ndim != 4:
        raise ConfigError(f"crop_and_resize_batch takes (B, C, H, W) patches, got shape {tuple(patches.shape)}")
    batch, channels, height, width = patches.shape
    targets = torch.as_tensor(target_mpps, dtype=torch.float64).cpu().reshape(-1).tolist()
    sources = torch.as_tensor(source_mpp, dtype=torch.float64).cpu().reshape(-1).tolist()
    if len(targets) != batch or len(sources) not in (1, batch):
        raise ConfigError(
            f"got {len(targets)} target and {len(sources)} source mpps for a batch of {batch} "
            "patches; give one target per patch and one source mpp (or one per patch)"
        )
    if len(sources) == 1:
        sources = sources * batch
    crops = [crop_size(out_size, s, t, tol) for s, t in zip(sources, targets)]
    worst = max(range(batch), key=crops.__getitem__)
    _check_fits(crops[worst], height, width, sources[worst], targets[worst], out_size)
    sizes = torch.tensor(crops)
    if position == "center":
        tops, lefts = ((height - sizes) // 2).tolist(), ((width - sizes) // 2).tolist()
    else:
        tops = (torch.rand(batch, generator=generator) * (height - sizes + 1)).long().tolist()
        lefts = (torch.rand(batch, generator=generator) * (width - sizes + 1)).long().tolist()

    # Work in crop-size order, one group per size; the inverse permutation goes to the device
    # before any kernel is queued, so the loop below never waits on the device.
    order = sorted(range(batch), key=crops.__getitem__)
    inverse = torch.empty(batch, dtype=torch.long)
    inverse[order] = torch.arange(batch)
    inverse = inverse.to(patches.device)
    compute = patches.dtype if patches.is_floating_point() else torch.float32
    parts = []
    for crop, members in groupby(order, key=crops.__getitem__):
        group = torch.stack([patches[i, :, tops[i] : tops[i] + crop, lefts[i] : lefts[i] + crop] for i in members])
        parts.append(
            F.interpolate(
                group.to(compute), size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True
            )
        )
    out = torch.cat(parts)[inverse]
    dtype = patches.dtype if out_dtype is None else out_dtype
    if dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(dtype)


def pick_source_scale(
    target_mpp: float,
    source_mpps: Sequence[float],
    *,
    out_size: int | None = None,
    source_size: int | None = None,
    tol: float = 0.02,
) -> float:
    """The coarsest source mpp in a tile set that serves ``target_mpp`` without upsampling.

    With ``out_size`` and ``source_size`` given, the crop must also fit in the source patch.
    """
    if len(source_mpps) == 0:
        raise ConfigError("pick_source_scale: the tile set has no source scales")
    usable = [s for s in source_mpps if target_mpp >= s * (1 - tol)]
    if not usable:
        finest = min(source_mpps)
        raise UpsamplingError(
            f"target mpp {target_mpp:g} is finer than every source scale (finest source mpp "
            f"{finest:g}, upsampling tolerance {tol:g}); add a finer scale to the tile set"
        )
    if out_size is not None and source_size is not None:
        usable = [s for s in usable if crop_size(out_size, s, target_mpp, tol) <= source_size]
        if not usable:
            raise ConfigError(
                f"no source scale in {sorted(source_mpps)} mpp serves target {target_mpp:g} mpp: "
                f"a {out_size} px output needs a crop larger than the {source_size} px source "
                "patches at every scale finer than the target; add a coarser scale or larger patches"
            )
    return max(usable)
