"""Gradient clipping per student submodule (backbone, DINO head, iBOT head), as DINOv2 does."""

from __future__ import annotations

import torch
from torch import nn


def clip_grad_norm_per_submodule(model: nn.Module, max_norm: float) -> dict[str, torch.Tensor]:
    """Clip the gradients of each direct submodule of ``model`` to total norm ``max_norm`` on its own.

    A gradient spike in one head then rescales only that head. Returns each submodule's norm before clipping.
    """
    if next(model.parameters(recurse=False), None) is not None:
        raise ValueError(f"{type(model).__name__} has parameters outside its submodules; they would not be clipped")
    return {name: torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
            for name, module in model.named_children()}
