"""The DINO/iBOT projection head: MLP → bottleneck → L2 normalise → weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear to ``bottleneck_dim``, L2 normalise, then ``num_prototypes`` logits.

    The last layer is weight-normalised: prototype k is g_k · v_k / ‖v_k‖ with the magnitude g
    (``original0``) filled with 1 and trainable, as in DINOv2, so a logit is g_k times the cosine between
    the bottleneck and v_k; it starts within [−1, 1] but is not bounded once g moves. Parameters of that
    layer (g included) have ``last_layer`` in their names, which the optimiser uses to freeze it early on.
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
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        return self.last_layer(F.normalize(x, dim=-1, eps=eps))
