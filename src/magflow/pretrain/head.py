"""The DINO/iBOT projection head: MLP → bottleneck → L2 normalise → weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear to ``bottleneck_dim``, L2 normalise, then ``num_prototypes`` logits.

    The last layer is weight-normalised with its magnitude fixed at 1 (``original0`` filled with 1 and
    frozen), so every logit is a cosine similarity between the bottleneck and a prototype. Parameters of
    that layer have ``last_layer`` in their names, which the optimiser uses to freeze it early on.
    """

    def __init__(self, in_dim: int, num_prototypes: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, num_prototypes, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        return self.last_layer(F.normalize(x, dim=-1, eps=eps))
