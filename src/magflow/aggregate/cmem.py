"""Contrastive MEM (CMEM): MEM on two views of a context, plus NT-Xent on their class tokens.

The two views are t×t sub-regions drawn at random from a c×c context of the coarsest grid (see
``magflow.aggregate.data.RegionSource.cmem_batch``), each under its own dihedral augmentation (the
same for every scale, ``magflow.aggregate.augment``) and its own MEM mask. Each view is encoded once:
its visible tokens feed the MEM decoder, and its class tokens (concatenated) feed a projector whose
outputs are contrasted with NT-Xent (τ = 0.2) across the batch. The loss is the mean of the two views'
MEM losses plus ``contrastive_weight`` · NT-Xent.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from timm.layers import Mlp
from torch import Tensor, nn

from magflow.aggregate.batch import RegionBatch
from magflow.aggregate.mem import MEM
from magflow.aggregate.mixer import MixerConfig, init_weights


def nt_xent(z1: Tensor, z2: Tensor, tau: float = 0.2) -> Tensor:
    """SimCLR's NT-Xent: each of the 2B embeddings picks its pair among the other 2B − 1 (cosine / τ)."""
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=-1)
    logits = z @ z.T / tau
    logits.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return nn.functional.cross_entropy(logits, target)


class Projector(nn.Module):
    """Concatenated class tokens → hidden (4096) → output (256), GELU between."""

    def __init__(self, in_dim: int, hidden: int = 4096, out: int = 256) -> None:
        super().__init__()
        self.mlp = Mlp(in_dim, hidden, out, act_layer=nn.GELU)
        self.apply(init_weights)

    def forward(self, cls: Tensor) -> Tensor:
        return self.mlp(cls.flatten(1))


class CmemResult(NamedTuple):
    loss: Tensor
    mem: Tensor
    contrastive: Tensor
    per_scale: Tensor


class CMEM(nn.Module):
    """MEM plus the projector; ``mem.encoder`` is what is kept after pretraining."""

    def __init__(self, config: MixerConfig, hidden: int = 4096, out: int = 256, tau: float = 0.2,
                 contrastive_weight: float = 1.0) -> None:
        super().__init__()
        self.config = config
        self.mem = MEM(config)
        self.projector = Projector(config.n_cls * config.width, hidden, out)
        self.tau = tau
        self.contrastive_weight = contrastive_weight

    @property
    def encoder(self) -> nn.Module:
        return self.mem.encoder

    def forward(self, views: tuple[RegionBatch, RegionBatch], masks: tuple[Tensor, Tensor]) -> CmemResult:
        a, b = self.mem(views[0], masks[0]), self.mem(views[1], masks[1])
        contrastive = nt_xent(self.projector(a.cls), self.projector(b.cls), self.tau)
        mem = (a.loss + b.loss) / 2
        return CmemResult(mem + self.contrastive_weight * contrastive, mem, contrastive,
                          (a.per_scale + b.per_scale) / 2)
