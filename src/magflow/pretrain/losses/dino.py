"""The DINO CLS loss: cross-entropy between teacher targets and student logits over cross-view pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dino_loss(student_global: torch.Tensor, teacher_targets: torch.Tensor,
              student_local: torch.Tensor | None = None, student_temp: float = 0.1) -> torch.Tensor:
    """Mean over pairs and samples of Σ_k −p_t,k · log softmax(s / student_temp)_k.

    ``student_global`` and ``teacher_targets`` are G×B×K (the G global crops, in the same order);
    ``student_local`` is L×B×K. A global crop is paired with every other teacher crop (never its own),
    a local crop with every teacher crop, so with G = 2 the average runs over 2 + 2L pairs.
    """
    n_global = teacher_targets.shape[0]
    if student_global.shape != teacher_targets.shape:
        raise ValueError(f"student_global {tuple(student_global.shape)} and teacher_targets "
                         f"{tuple(teacher_targets.shape)} must both be G×B×K")
    student = student_global if student_local is None else torch.cat([student_global, student_local])
    log_probs = F.log_softmax(student.float() / student_temp, dim=-1)
    # cross_entropy[t, v] = batch mean of the cross-entropy between teacher crop t and student view v
    cross_entropy = -torch.einsum("tbk,vbk->tvb", teacher_targets.float(), log_probs).mean(dim=-1)
    pairs = torch.ones_like(cross_entropy, dtype=torch.bool)
    pairs[:, :n_global].fill_diagonal_(False)
    return cross_entropy[pairs].sum() / pairs.sum()
