"""The EMA teacher: teacher ← m·teacher + (1 − m)·student, parameter by parameter."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Move every teacher parameter towards the student's with the same name (the teacher is a deep copy)."""
    student_params = dict(student.named_parameters())
    for name, teacher_param in teacher.named_parameters():
        teacher_param.lerp_(student_params[name].detach(), 1.0 - momentum)
