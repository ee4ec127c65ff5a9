"""Attention-based multiple-instance learning (AB-MIL) with gated attention (Ilse et al., 2018).

A bag (a slide) is a set of instance features; the model pools them with learned attention weights
and classifies the pooled vector. Bags of different sizes are padded to one B×I×D batch with a
``valid`` mask; padded instances get exactly zero weight, so padding never changes a bag's output.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class ABMILOutput(NamedTuple):
    logits: Tensor     # B×C
    attention: Tensor  # B×I, sums to 1 over each bag's valid instances, 0 on padding


class GatedAttention(nn.Module):
    """a_i = softmax_i(wᵀ(tanh(V h_i) ⊙ sigm(U h_i))) over the valid instances of each bag.

    The sigmoid gate lets the attention score be non-linear in h beyond what tanh alone can express
    (Ilse et al., eq. 9).
    """

    def __init__(self, in_dim: int, attn_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.sigmoid_branch = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(attn_dim, 1)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """Attention weights B×I for instances ``h`` B×I×D; every bag needs at least one valid instance."""
        if not bool(valid.any(dim=1).all()):
            raise ValueError("every bag needs at least one valid instance (a slide with no tiles left?)")
        scores = self.score(self.tanh_branch(h) * self.sigmoid_branch(h)).squeeze(-1)
        return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)


class ABMIL(nn.Module):
    """Optional input projection (Linear, ReLU, dropout), gated attention pooling, dropout, linear classifier.

    ``hidden_dim=None`` pools the input features as they are. The projection is also what compresses
    wide instances, such as the concatenated class tokens of a region.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int | None = 256, attn_dim: int = 128,
                 dropout: float = 0.25) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"ABMIL needs at least 2 classes, got {n_classes}")
        width = hidden_dim or in_dim
        self.project = (nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout))
                        if hidden_dim else nn.Identity())
        self.attention = GatedAttention(width, attn_dim, dropout)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> ABMILOutput:
        """Logits and attention for bags ``x`` B×I×D (``valid`` B×I bool; None: all instances are real)."""
        if valid is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.project(x.masked_fill(~valid.unsqueeze(-1), 0.0))  # padding may hold anything, even NaN
        attention = self.attention(h, valid)
        pooled = torch.einsum("bi,bid->bd", attention, h)
        return ABMILOutput(self.classifier(self.dropout(pooled)), attention)
