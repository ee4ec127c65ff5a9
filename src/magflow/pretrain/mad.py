"""Magnification-aware distillation (MAD) as a strategy of the shared DINOv2 trainer.

The EMA teacher sees the 2 global views of each item; the student sees them too, plus its local
views: for a transition item the n aligned children at the next magnification (native resolution,
:mod:`magflow.pretrain.mad_views`), for a standalone item DINOv2's local crops. The student's
cross-entropy to the teacher runs over DINOv2's cross-view pairs (each global against the other
teacher global, each local against both), averaged per item, so a batch's DINO term is the
item-weighted mean of its transition items' term and its standalone items' term. KoLeo is DINOv2's
(on the student's global CLS tokens); iBOT on the globals only when ``MadConfig.ibot``.

**Mixed batches.** Transition locals are global_size px and standalone locals local_size px, so a
batch that mixes both is one student forward pass with two local groups (``DINOv2.forward`` takes a
list), and the teacher targets of all globals are made (and the centre moved) once. This keeps every
item's draw independent (``standalone_p`` is a per-item probability, not per batch) and calls every
collective of DDP, centring and Sinkhorn-Knopp once per iteration on every process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from magflow.pretrain import seeds
from magflow.pretrain.dinov2 import DINOv2, StudentOutput, TeacherOutput, teacher_targets
from magflow.pretrain.losses import dino_loss, ibot_loss, koleo_loss
from magflow.pretrain.mad_config import MadConfig
from magflow.pretrain.mad_data import MadBatches, MadSource
from magflow.pretrain.mad_views import MadViews, check_sizes, make_mad_views
from magflow.pretrain.strategy import Prepared, ibot_masks
from magflow.pretrain.views import ViewConfig

if TYPE_CHECKING:
    from magflow.pretrain.train_config import TrainConfig

STRATEGY = "mad"


def mad_losses(student: StudentOutput, teacher: TeacherOutput, masks: torch.Tensor | None, views: MadViews,
               n_children: int, n_local_crops: int, centers: nn.ModuleDict, teacher_temp: float, strategy: str,
               student_temp: float = 0.1) -> dict[str, torch.Tensor]:
    """The unweighted DINO, iBOT and KoLeo terms of one MAD batch (transition items first)."""
    batch = len(views.global_mpp) // 2
    transition = views.n_transition
    targets = teacher_targets(teacher.cls_logits, teacher_temp, strategy, centers["dino"]).unflatten(0, (2, batch))
    logits = student.cls_logits
    student_globals = logits[:2 * batch].unflatten(0, (2, batch))
    dino, offset = logits.new_zeros((), dtype=torch.float32), 2 * batch
    for items, n_locals in ((slice(0, transition), n_children), (slice(transition, batch), n_local_crops)):
        count = items.stop - items.start
        if not count:
            continue
        local = None
        if n_locals:
            local = logits[offset:offset + n_locals * count].unflatten(0, (n_locals, count))
            offset += n_locals * count
        dino = dino + count / batch * dino_loss(student_globals[:, items], targets[:, items], local, student_temp)
    terms = {"dino": dino, "koleo": koleo_loss(student.global_cls.unflatten(0, (2, batch)))}
    if masks is not None and student.patch_logits is not None and teacher.patch_logits is not None:
        patch_targets = teacher_targets(teacher.patch_logits, teacher_temp, strategy, centers["ibot"])
        terms["ibot"] = ibot_loss(student.patch_logits, patch_targets, masks, student_temp)
    else:
        terms["ibot"] = logits.new_zeros((), dtype=torch.float32)
    return terms


class MadStrategy:
    """MAD on the MAD tile set's stores (see :mod:`magflow.pretrain.mad_data` for how items are drawn)."""

    name = STRATEGY

    def __init__(self, config: TrainConfig, stores: Sequence[str | os.PathLike[str]], mad: MadConfig) -> None:
        self.config, self.mad = config, mad
        self.name = mad.strategy
        self.uses_ibot = mad.ibot
        self.views_config = ViewConfig(config.global_size, config.local_size, config.n_local_crops)
        self.source = MadSource(stores, mad)
        check_sizes(self.views_config, self.source.cell_px)

    def batches(self, batch_size: int, seed: int, rank: int, iterations: int) -> Dataset[dict[str, Any]]:
        return MadBatches(self.source, batch_size, seed, rank, iterations)

    def prepare(self, batch: dict[str, Any], iteration: int, rank: int, device: torch.device) -> Prepared:
        config = self.config
        views = make_mad_views(batch, self.source.cell_px, self.views_config,
                               seeds.torch_generator(config.seed, rank, iteration, "views"), device)
        masks = indices = None
        if self.uses_ibot:
            masks, indices = ibot_masks(config, 2 * config.batch_size, config.seed, rank, iteration, device)
        locals_ = [v for v in (views.children, views.standalone_locals) if v is not None]
        return Prepared(views.global_crops, locals_ or None, masks, indices, views.item_mpp, views)

    def losses(self, inputs: Prepared, teacher: DINOv2, student: nn.Module, centers: nn.ModuleDict,
               teacher_temp: float) -> dict[str, torch.Tensor]:
        config = self.config
        teacher_out = teacher.teacher(inputs.global_crops, inputs.mask_indices)
        student_out = student(inputs.global_crops, inputs.local_crops, inputs.masks, inputs.mask_indices)
        return mad_losses(student_out, teacher_out, inputs.masks, inputs.views, self.mad.children,
                          config.n_local_crops, centers, teacher_temp, config.target_strategy, config.student_temp)

    def identity(self) -> dict[str, Any]:
        return {"mad": dataclasses.asdict(self.mad), "stores": [str(p) for p in self.source.paths]}

    def card(self) -> dict[str, Any]:
        config, summary = self.config, self.source.summary()
        settings = {**dataclasses.asdict(self.mad), "transition_probabilities": self.mad.probabilities()}
        model = ("teacher backbone pretrained with magnification-aware distillation, MAD (magflow)"
                 if self.mad.strategy == STRATEGY else "teacher backbone pretrained with DINOv2 on the MAD tile set "
                 "(standalone tiles of every scale, DINO + iBOT + KoLeo): the MAD paper's same-data baseline")
        return {"model": model, "strategy": self.mad.strategy, "mad": settings,
                "data": {"stores": self.source.stores, **summary},
                "views": {"global_size": config.global_size, "children": self.mad.children,
                          "children_size": config.global_size, "local_size": config.local_size,
                          "n_local_crops": config.n_local_crops,
                          "view_mpp": f"tile mpp x {summary['cell_px']}/{config.global_size}",
                          "magnification": "teacher: 2 globals of the context tile; student: those and "
                                           f"{self.mad.children} aligned children at the next magnification "
                                           "(whole cells, photometric augmentation only); standalone items: "
                                           "DINOv2 multi-crop at the tile's mpp"}}

    def describe(self) -> str:
        summary = self.source.summary()
        transitions = ", ".join(f"{name} mpp: {t['parents']} parents ({t['skipped_parents']} with too few children)"
                                for name, t in summary["transitions"].items())
        return f"MAD at {self.source.scales} mpp; {transitions}; standalone tiles {summary['standalone_tiles']}"
