"""A benchmark's PNGs as model inputs: the size they are fed at, and a Dataset that decodes them.

The benchmark papers' authors feed their 224 px images as they are. So an image goes to the model at
the benchmark's native size (the size of its first image; every image must have it) whenever the
model takes that size: a model without a patch embedding (a CNN), a ViT with a dynamic image size
(or dynamic padding) whose patch divides the size, or a ViT built for exactly that size. Otherwise
(a ViT with a fixed, different input size) every image is resized to the model's size in the loader,
by Pillow's bicubic filter (antialiased when shrinking), and the record says so.

Decoding happens in :class:`BenchmarkImages.__getitem__`, so with ``num_workers > 0`` a DataLoader
decodes in its worker processes, never in the main one. Items are uint8 C×H×W tensors (RGB) and
the row index; the encoder divides by 255 and normalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from magflow.errors import ConfigError

from .paths import layout_error

RESIZE_FILTER = "Pillow bicubic (antialiased when shrinking), in the loader"


@dataclass(frozen=True)
class InputSize:
    """The side the images are fed at, and whether that differs from the benchmark's own."""

    native_px: int   # the benchmark's image side
    input_px: int    # what the model is given
    reason: str      # why this size

    @property
    def resized(self) -> bool:
        return self.input_px != self.native_px


def native_size(name: str, layout: str, path: str | Path) -> int:
    """The side of a benchmark's square image (its first one); a non-square image is refused."""
    with Image.open(path) as image:
        width, height = image.size
    if width != height:
        raise layout_error(name, layout, f"images must be square, this one is {width}×{height} px", path)
    return int(width)


def input_size(model: nn.Module, native_px: int) -> InputSize:
    """The size ``model`` (a timm model) is fed a benchmark of ``native_px`` images at."""
    embed = getattr(model, "patch_embed", None)
    fixed = getattr(embed, "img_size", None)
    if embed is None or fixed is None:
        return InputSize(native_px, native_px, "the model takes any input size")
    fixed_px = int(fixed[0]) if isinstance(fixed, (tuple, list)) else int(fixed)
    patch = getattr(embed, "patch_size", (1, 1))
    patch_px = int(patch[0]) if isinstance(patch, (tuple, list)) else int(patch)
    if fixed_px == native_px:
        return InputSize(native_px, native_px, f"the model is built for {fixed_px} px")
    if not getattr(embed, "strict_img_size", True):
        if getattr(embed, "dynamic_img_pad", False) or native_px % patch_px == 0:
            return InputSize(native_px, native_px, f"the model has a dynamic input size (patch {patch_px} px)")
        return InputSize(native_px, fixed_px, f"{native_px} px is not a multiple of the model's {patch_px} px "
                                              f"patch: resized to its {fixed_px} px")
    return InputSize(native_px, fixed_px, f"the model takes only {fixed_px} px: resized to it")


def unwrap_worker_error(error: ConfigError) -> ConfigError:
    """A ConfigError raised in a DataLoader worker comes back with the worker's traceback in its message;
    the error itself is its last line."""
    text = str(error).rstrip()
    if "DataLoader worker" not in text:
        return error
    last = text.splitlines()[-1]
    return ConfigError(last.split("ConfigError: ", 1)[-1])


class BenchmarkImages(Dataset):
    """The images at ``paths`` as (uint8 3×S×S tensor, index), S = ``size.input_px``; each must be
    ``size.native_px`` px square, else a ConfigError naming the benchmark and the file."""

    def __init__(self, paths: Sequence[str], size: InputSize, name: str, layout: str) -> None:
        self.paths = list(paths)
        self.size = size
        self.name = name
        self.layout = layout

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        with Image.open(path) as image:
            if image.size != (self.size.native_px, self.size.native_px):
                raise layout_error(self.name, self.layout, f"this image is {image.size[0]}×{image.size[1]} px, the "
                                   f"benchmark's first is {self.size.native_px} px square; every image of a "
                                   "benchmark must have one size: resize or remove it", path)
            rgb = image.convert("RGB")
            if self.size.resized:
                rgb = rgb.resize((self.size.input_px, self.size.input_px), Image.Resampling.BICUBIC)
            pixels = np.asarray(rgb, dtype=np.uint8)
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous(), index
