"""Attention-based multiple-instance learning (AB-MIL, Ilse et al., 2018) as the aggregation paper uses it.

A bag (a slide) is a set of instance features z_1..z_I; the model pools them with attention weights
and classifies the pooled vector. Two aggregator forms (``aggregate.abmil.aggregator``):

- ``paper-eq7`` (default): the paper's Eq. 7, the attention-weighted sum of the instance features
  themselves (the mixing encoder's outputs, or the tile embeddings of the baselines)::

      z = Σ_i a_i z_i

  with the attention of Eq. 8 (``attention: tanh``, Ilse et al.'s attention pooling)::

      a_i = exp(wᵀ tanh(V z_i)) / Σ_j exp(wᵀ tanh(V z_j)),   V: attn_dim × D, w: attn_dim

  ``attn_dim`` is the aggregator's hidden size (the paper's is 16). ``attention: gated`` takes Ilse
  et al.'s gated form instead, wᵀ(tanh(V z_i) ⊙ sigm(U z_i)).
- ``projection``: the instances first go through Linear(D → ``hidden_dim``), ReLU and dropout, and
  the projected vectors are pooled (an earlier magflow form; a named option, recorded as such).

The pooled vector goes through dropout and a linear classifier. Bags of different sizes are padded to
one B×I×D batch with a ``valid`` mask; padded instances get exactly zero weight, so padding never
changes a bag's output.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from magflow.aggregate.settings import ATTENTIONS


class ABMILOutput(NamedTuple):
    logits: Tensor     # B×C
    attention: Tensor  # B×I, sums to 1 over each bag's valid instances, 0 on padding


def _masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    if not bool(valid.any(dim=1).all()):
        raise ValueError("every bag needs at least one valid instance (a slide with no tiles left?)")
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)


class TanhAttention(nn.Module):
    """Eq. 8: a_i = softmax_i(wᵀ tanh(V z_i)) over the valid instances of each bag (no biases)."""

    def __init__(self, in_dim: int, attn_dim: int = 16) -> None:
        super().__init__()
        self.V = nn.Linear(in_dim, attn_dim, bias=False)
        self.w = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """Attention weights B×I for instances ``h`` B×I×D; every bag needs at least one valid instance."""
        return _masked_softmax(self.w(torch.tanh(self.V(h))).squeeze(-1), valid)


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
        return _masked_softmax(self.score(self.tanh_branch(h) * self.sigmoid_branch(h)).squeeze(-1), valid)


class ABMIL(nn.Module):
    """Optional input projection (``hidden_dim``; None: Eq. 7, pool the inputs as they are), attention
    pooling, dropout, linear classifier."""

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int | None = None, attn_dim: int = 16,
                 dropout: float = 0.25, attention: str = "tanh") -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"ABMIL needs at least 2 classes, got {n_classes}")
        if attention not in ATTENTIONS:
            raise ValueError(f"ABMIL attention {attention!r}: must be one of {ATTENTIONS}")
        width = hidden_dim or in_dim
        self.project = (nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout))
                        if hidden_dim else nn.Identity())
        self.attention = (TanhAttention(width, attn_dim) if attention == "tanh"
                          else GatedAttention(width, attn_dim, dropout))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, n_classes)

    def pool(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The pooled vector B×D' (Eq. 7 when there is no projection) and the attention B×I."""
        if valid is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.project(x.masked_fill(~valid.unsqueeze(-1), 0.0))  # padding may hold anything, even NaN
        attention = self.attention(h, valid)
        return torch.einsum("bi,bid->bd", attention, h), attention

    def forward(self, x: Tensor, valid: Tensor | None = None) -> ABMILOutput:
        """Logits and attention for bags ``x`` B×I×D (``valid`` B×I bool; None: all instances are real)."""
        pooled, attention = self.pool(x, valid)
        return ABMILOutput(self.classifier(self.dropout(pooled)), attention)
