"""The DINOv2 network (backbone, DINO head, optional separate iBOT head) and its losses on one batch of views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from magflow.pretrain.backbone import Backbone
from magflow.pretrain.head import DINOHead
from magflow.pretrain.losses import dino_loss, ibot_loss, koleo_loss
from magflow.pretrain.targets import Center, sinkhorn_knopp


class StudentOutput(NamedTuple):
    global_cls: torch.Tensor            # (G·B)×D backbone CLS of the global crops (for KoLeo)
    cls_logits: torch.Tensor            # ((G+L)·B)×K, the global crops first
    patch_logits: torch.Tensor | None   # M×K for the M masked patch tokens; None without iBOT


class TeacherOutput(NamedTuple):
    cls_logits: torch.Tensor            # (G·B)×K
    patch_logits: torch.Tensor | None   # M×K at the student's masked positions


class DINOv2(nn.Module):
    """Student or (as a deep copy) teacher. Without a separate iBOT head, iBOT shares the DINO head."""

    def __init__(self, backbone: Backbone, dino_head: DINOHead, ibot_head: DINOHead | None = None) -> None:
        super().__init__()
        self.backbone, self.dino_head, self.ibot_head = backbone, dino_head, ibot_head

    def _patch_head(self) -> DINOHead:
        return self.dino_head if self.ibot_head is None else self.ibot_head

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | Sequence[torch.Tensor] | None,
                masks: torch.Tensor | None = None, mask_indices: torch.Tensor | None = None) -> StudentOutput:
        """The student pass: ``masks`` (images×N bool) hide patches of the global crops for iBOT.

        ``local_crops`` may be a list of groups of different sizes (MAD: native children and small
        crops), encoded group by group in one pass, their logits in list order after the globals'.
        """
        out = self.backbone(global_crops, masks)
        if local_crops is None:
            cls = out.cls
        elif isinstance(local_crops, torch.Tensor):
            cls = torch.cat([out.cls, self.backbone(local_crops).cls])
        else:
            cls = torch.cat([out.cls, *(self.backbone(group).cls for group in local_crops)])
        patch_logits = None
        if mask_indices is not None:
            patch_logits = self._patch_head()(out.patches.flatten(0, 1)[mask_indices])
        return StudentOutput(out.cls, self.dino_head(cls), patch_logits)

    @torch.no_grad()
    def teacher(self, global_crops: torch.Tensor, mask_indices: torch.Tensor | None = None) -> TeacherOutput:
        """The teacher pass: unmasked global crops; patch logits where the student's patches were masked."""
        out = self.backbone(global_crops)
        patch_logits = None
        if mask_indices is not None:
            patch_logits = self._patch_head()(out.patches.flatten(0, 1)[mask_indices])
        return TeacherOutput(self.dino_head(out.cls), patch_logits)


def _global_count(n: int, device: torch.device) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return n
    count = torch.tensor([n], device=device)
    dist.all_reduce(count)
    return int(count.item())


@torch.no_grad()
def teacher_targets(logits: torch.Tensor, temp: float, strategy: str, center: Center) -> torch.Tensor:
    """Teacher probabilities: centred softmax (then the centre moves), or Sinkhorn-Knopp over all processes."""
    if strategy == "sinkhorn":
        return sinkhorn_knopp(logits, temp, n_samples=_global_count(logits.shape[0], logits.device))
    targets = center.targets(logits, temp)
    # A process with no rows still joins the centre's all-reduce; it contributes the current centre.
    center.update(logits if logits.shape[0] else center.center.to(logits.dtype))
    return targets


def dinov2_losses(student: StudentOutput, teacher: TeacherOutput, masks: torch.Tensor | None, batch: int,
                  centers: nn.ModuleDict, teacher_temp: float, strategy: str,
                  student_temp: float = 0.1) -> dict[str, torch.Tensor]:
    """The unweighted DINO (CLS), iBOT (masked patches) and KoLeo terms of a batch of ``batch`` items.

    Crops are view-major (view v of item b is row v·batch + b); iBOT is 0 without masks.
    """
    n_global = teacher.cls_logits.shape[0] // batch
    cls_targets = teacher_targets(teacher.cls_logits, teacher_temp, strategy, centers["dino"])
    student_cls = student.cls_logits.unflatten(0, (-1, batch))
    terms = {
        "dino": dino_loss(student_cls[:n_global], cls_targets.unflatten(0, (n_global, batch)),
                          student_cls[n_global:] if len(student_cls) > n_global else None, student_temp),
        "koleo": koleo_loss(student.global_cls.unflatten(0, (n_global, batch))),
    }
    if masks is not None and student.patch_logits is not None and teacher.patch_logits is not None:
        patch_targets = teacher_targets(teacher.patch_logits, teacher_temp, strategy, centers["ibot"])
        terms["ibot"] = ibot_loss(student.patch_logits, patch_targets, masks, student_temp)
    else:
        terms["ibot"] = student.cls_logits.new_zeros((), dtype=torch.float32)
    return terms
