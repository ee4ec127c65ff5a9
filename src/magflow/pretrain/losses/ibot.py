"""The iBOT masked-patch loss: per-image mean cross-entropy over masked tokens, averaged over all global crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_loss(student_logits: torch.Tensor, teacher_targets: torch.Tensor, masks: torch.Tensor,
              student_temp: float = 0.1) -> torch.Tensor:
    """Cross-entropy on masked tokens, averaged within each image, then summed and divided by ``n_images``.

    ``masks`` is n_images×N bool over every global crop (n_images = 2·B); ``student_logits`` and
    ``teacher_targets`` are M×K for the M masked tokens in ``masks``' row-major order (the rows of
    ``x[masks]``). Each token is weighted by 1 / (masked tokens in its image) and the sum divided by
    n_images, as DINOv2 does: an image without masked tokens counts as a 0 in the mean.
    """
    n_images = masks.shape[0]
    per_image = masks.sum(dim=-1)
    if student_logits.shape[0] != int(per_image.sum()) or student_logits.shape != teacher_targets.shape:
        raise ValueError(f"expected {int(per_image.sum())} masked tokens in student and teacher, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_targets.shape)}")
    token_weights = (1.0 / per_image.clamp(min=1)).unsqueeze(-1).expand_as(masks)[masks]
    log_probs = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    cross_entropy = -(teacher_targets.float() * log_probs).sum(dim=-1)
    return (cross_entropy * token_weights).sum() / max(n_images, 1)
