"""What a pretraining strategy plugs into the shared trainer: its batches, its views and its loss terms.

The trainer (:mod:`magflow.pretrain.trainer`) owns everything strategies share: the model, the EMA
teacher, the centres, the optimiser and schedules, DDP, checkpoints and export. A strategy decides
what one iteration's items are and how they become teacher and student inputs and loss terms:

- :class:`SamplingStrategy`: DINOv2 with continuous magnification sampling (an mpp per item from a
  sampler, multi-crop views at that mpp, or DINOv2's random-resized crops of a source patch at it);
- :class:`magflow.pretrain.mad.MadStrategy`: magnification-aware distillation (the teacher sees a
  context tile, the student its aligned children at the next magnification).

``prepare`` runs outside autocast (the views' blur is a convolution autocast would run in bf16),
``losses`` inside it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from magflow.pretrain import seeds
from magflow.pretrain.data import IterationBatches, TileSource
from magflow.pretrain.dinov2 import DINOv2, dinov2_losses
from magflow.pretrain.dinov2_views import RATIO, Dinov2ViewConfig, make_dinov2_views
from magflow.pretrain.masking import mask_global_crops
from magflow.pretrain.views import ViewConfig, Views, make_views, view_mpps
from magflow.sampling.record import to_record
from magflow.sampling.sampler import Sampler

if TYPE_CHECKING:
    from magflow.pretrain.train_config import TrainConfig

OPERATIONAL = ("checkpoint_every", "log_every", "num_workers", "compile")  # may change when resuming
DINOV2_VIEWS = ("views", "source_size", "global_crops_scale", "local_crops_scale")  # no effect on exact views


@dataclass
class Prepared:
    """One iteration's inputs on the device, before any forward pass."""

    global_crops: torch.Tensor                 # teacher and student globals, view-major
    local_crops: torch.Tensor | list[torch.Tensor] | None  # the student's locals (one tensor per view size)
    masks: torch.Tensor | None                 # iBOT masks of the globals, or None
    mask_indices: torch.Tensor | None
    mpp: torch.Tensor                          # per item, what the log's mpp histogram shows
    views: Any                                 # the strategy's own view record


class Strategy(Protocol):
    name: str
    uses_ibot: bool

    def batches(self, batch_size: int, seed: int, rank: int, iterations: int) -> Dataset[dict[str, Any]]: ...

    def prepare(self, batch: dict[str, Any], iteration: int, rank: int, device: torch.device) -> Prepared: ...

    def losses(self, inputs: Prepared, teacher: DINOv2, student: nn.Module, centers: nn.ModuleDict,
               teacher_temp: float) -> dict[str, torch.Tensor]: ...

    def identity(self) -> dict[str, Any]: ...

    def card(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...


def config_identity(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share; an exact-views run leaves out the dinov2 view settings (it
    ignores them), so its checkpoints from before they existed still resume."""
    unused = DINOV2_VIEWS if config.views == "exact" else ()
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in OPERATIONAL and k not in unused}


def ibot_masks(config: TrainConfig, n_globals: int, seed: int, rank: int, iteration: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    grid = (config.global_size // config.patch_size,) * 2
    mask_batch = mask_global_crops(n_globals, grid, seeds.numpy_rng(seed, rank, iteration, "masks"),
                                   config.mask_probability, config.mask_ratio)
    return mask_batch.masks.to(device), mask_batch.indices.to(device)


class SamplingStrategy:
    """DINOv2 on the train tile set, every item at an mpp drawn from ``sampler``; its views as
    ``config.views`` says: exact (every view at that mpp) or dinov2 (random-resized crops of a
    ``source_size`` px source patch at that mpp)."""

    def __init__(self, config: TrainConfig, stores: Sequence[str | os.PathLike[str]], sampler: Sampler) -> None:
        self.config, self.sampler = config, sampler
        self.name = sampler.config.strategy
        self.uses_ibot = config.ibot
        self.source = TileSource(stores, config.global_size)
        self.views_config: ViewConfig | Dinov2ViewConfig
        if config.views == "dinov2":
            self.views_config = Dinov2ViewConfig(config.global_size, config.local_size, config.n_local_crops,
                                                 config.source_size, config.global_crops_scale,
                                                 config.local_crops_scale)
            self.views_config.check()
            self.window = config.source_size  # the largest window cut from a stored patch, in output px
            self.source.check_serves(sampler.distribution, config.source_size, "pretrain.train.source_size")
        else:
            self.views_config = ViewConfig(config.global_size, config.local_size, config.n_local_crops)
            self.views_config.check(self.source.source_px)
            self.window = config.global_size
            self.source.check_serves(sampler.distribution)

    def batches(self, batch_size: int, seed: int, rank: int, iterations: int) -> Dataset[dict[str, Any]]:
        return IterationBatches(self.source, self.sampler.distribution, batch_size, seed, rank, iterations)

    def prepare(self, batch: dict[str, Any], iteration: int, rank: int, device: torch.device) -> Prepared:
        config = self.config
        mpp = view_mpps(batch["target_mpp"], batch["source_mpp"], self.window, self.source.source_px)
        images = batch["images"].to(device, non_blocking=True)
        generator = seeds.torch_generator(config.seed, rank, iteration, "views")
        if isinstance(self.views_config, Dinov2ViewConfig):
            views = make_dinov2_views(images, batch["source_mpp"], mpp, self.views_config, generator)
        else:
            views = make_views(images, batch["source_mpp"], mpp, self.views_config, generator)
        masks = indices = None
        if config.ibot:
            masks, indices = ibot_masks(config, 2 * config.batch_size, config.seed, rank, iteration, device)
        return Prepared(views.global_crops, views.local_crops, masks, indices, mpp, views)

    def view_stats(self, inputs: Prepared) -> dict[str, torch.Tensor]:
        """Per view (CPU float64), the mpp it shows after its crop, for the log's histograms: the drawn mpp
        for exact views, t·√(w·h)/n for a dinov2 view cut from a w×h box resized to n px."""
        views: Views = inputs.views
        stats = {"mpp/effective_global": views.global_effective_mpp}
        if views.local_crops is not None:
            stats["mpp/effective_local"] = views.local_effective_mpp
        return {tag: values.cpu() for tag, values in stats.items() if values is not None}

    def losses(self, inputs: Prepared, teacher: DINOv2, student: nn.Module, centers: nn.ModuleDict,
               teacher_temp: float) -> dict[str, torch.Tensor]:
        config = self.config
        teacher_out = teacher.teacher(inputs.global_crops, inputs.mask_indices)
        student_out = student(inputs.global_crops, inputs.local_crops, inputs.masks, inputs.mask_indices)
        return dinov2_losses(student_out, teacher_out, inputs.masks, config.batch_size, centers, teacher_temp,
                             config.target_strategy, config.student_temp)

    def identity(self) -> dict[str, Any]:
        record = to_record(self.sampler)
        return {"sampler": {k: record[k] for k in ("strategy", "kernel", "lam", "mpp", "range", "support", "p",
                                                   "cell_lo", "cell_hi")},
                "stores": [str(p) for p in self.source.paths]}

    def card(self) -> dict[str, Any]:
        source = self.source
        return {"model": "DINOv2 teacher backbone pretrained with magnification sampling (magflow)",
                "strategy": self.name, "sampler": to_record(self.sampler),
                "data": {"stores": source.stores, "tiles": len(source), "scales": source.scales,
                         "source_px": source.source_px},
                "views": self._card_views()}

    def _card_views(self) -> dict[str, Any]:
        config = self.config
        views: dict[str, Any] = {"mode": config.views, "global_size": config.global_size,
                                 "local_size": config.local_size, "n_local_crops": config.n_local_crops}
        if config.views == "exact":
            return {**views, "magnification": "one mpp per item, all views exactly at it"}
        return {**views, "source_size": config.source_size, "global_crops_scale": list(config.global_crops_scale),
                "local_crops_scale": list(config.local_crops_scale), "aspect_ratio": list(RATIO),
                "interpolation": "bicubic (Keys a=-0.5), antialiased when shrinking",
                "magnification": f"one mpp t per item: a {config.source_size} px source patch at t, then DINOv2's "
                                 "random-resized crops of it; a crop of w x h source px resized to n px shows "
                                 "t*w/n x t*h/n mpp"}

    def describe(self) -> str:
        return f"{len(self.source)} tiles at {self.source.scales} mpp"
