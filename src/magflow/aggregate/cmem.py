"""Contrastive MEM (CMEM): MEM on two views of a context, plus a contrastive loss on their class tokens.

The two views are t×t sub-regions drawn at random from a c×c context of the coarsest grid (see
``magflow.aggregate.data.RegionSource.cmem_batch``), each under its own dihedral augmentation (the
same for every scale, ``magflow.aggregate.augment``) and its own MEM mask. Each view is encoded once:
its visible tokens feed the MEM decoder, and its class tokens (concatenated) feed a projector whose
outputs u_i (view 1) and v_i (view 2) of the N regions of a batch are contrasted (τ = 0.2). The loss
is the mean of the two views' MEM losses plus ``contrastive_weight`` · the contrastive loss.

Two contrastive losses (``aggregate.pretrain.contrastive_loss``), with s(a, b) the cosine similarity:

- ``paper-eq5`` (default), the aggregation paper's Eq. 5 as we read it: the positive is left out of
  the denominator, which sums over the other view's embeddings j ≠ i::

      L = −(1/N) Σ_i log( exp(s(u_i, v_i)/τ) / Σ_{j≠i} exp(s(u_i, v_j)/τ) )

  Without the positive in the denominator the loss is not bounded below by 0 (it is negative once a
  positive pair is more similar than the log-sum-exp of its negatives).
- ``simclr``: SimCLR's symmetric NT-Xent: each of the 2N embeddings (both views) picks its pair among
  the other 2N − 1, positive included::

      L = −(1/2N) Σ_{k=1..2N} log( exp(s(w_k, w_p(k))/τ) / Σ_{m≠k} exp(s(w_k, w_m)/τ) ),  w = (u, v)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from timm.layers import Mlp
from torch import Tensor, nn

from magflow.aggregate.batch import RegionBatch
from magflow.aggregate.mem import MEM
from magflow.aggregate.mixer import MixerConfig, init_weights
from magflow.errors import ConfigError


def nt_xent(z1: Tensor, z2: Tensor, tau: float = 0.2) -> Tensor:
    """SimCLR's symmetric NT-Xent: each of the 2N embeddings picks its pair among the other 2N − 1 (cosine / τ)."""
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=-1)
    logits = z @ z.T / tau
    logits.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return nn.functional.cross_entropy(logits, target)


def paper_eq5(z1: Tensor, z2: Tensor, tau: float = 0.2) -> Tensor:
    """Eq. 5: −mean_i log(exp(s(u_i, v_i)/τ) / Σ_{j≠i} exp(s(u_i, v_j)/τ)), u = ``z1``, v = ``z2`` (N ≥ 2)."""
    if z1.shape[0] < 2:
        raise ValueError("the contrastive loss needs at least 2 regions per batch (aggregate.pretrain.batch_size)")
    u = nn.functional.normalize(z1.float(), dim=-1)
    v = nn.functional.normalize(z2.float(), dim=-1)
    logits = u @ v.T / tau
    positive = logits.diagonal()
    negatives = logits.masked_fill(torch.eye(len(u), dtype=torch.bool, device=u.device), float("-inf"))
    return (torch.logsumexp(negatives, dim=1) - positive).mean()


def contrastive_loss(name: str) -> Callable[[Tensor, Tensor, float], Tensor]:
    """The loss function of ``aggregate.pretrain.contrastive_loss``."""
    losses = {"paper-eq5": paper_eq5, "simclr": nt_xent}
    if name not in losses:
        raise ConfigError(f"aggregate.pretrain.contrastive_loss = {name!r}: must be one of {', '.join(losses)}")
    return losses[name]


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
                 contrastive_weight: float = 1.0, loss: str = "paper-eq5") -> None:
        super().__init__()
        self.loss_name = loss
        self.contrastive = contrastive_loss(loss)
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
        contrastive = self.contrastive(self.projector(a.cls), self.projector(b.cls), self.tau)
        mem = (a.loss + b.loss) / 2
        return CmemResult(mem + self.contrastive_weight * contrastive, mem, contrastive,
                          (a.per_scale + b.per_scale) / 2)
