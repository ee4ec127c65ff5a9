"""Teacher targets: softmax with an EMA centre, or Sinkhorn-Knopp equipartition (as in DINOv2/SwAV)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x)
    return x


class Center(nn.Module):
    """The EMA centre of teacher logits, one per loss (CLS and patch tokens have their own).

    Call ``targets`` first, then ``update`` with the same logits: the centre used at step n is
    built from the batches of steps 0..n-1 only (it starts at zero).
    """

    center: torch.Tensor

    def __init__(self, num_prototypes: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    @torch.no_grad()
    def targets(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        """softmax((logits - centre) / temp) over the last dimension; ``teacher_logits`` is ...×K."""
        return F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """centre ← m·centre + (1 − m)·(batch mean of the logits, averaged over processes)."""
        logits = teacher_logits.float().reshape(-1, self.center.shape[-1])
        batch_mean = logits.mean(dim=0, keepdim=True)
        if _distributed():
            batch_mean = _all_reduce_sum(batch_mean) / dist.get_world_size()
        self.center.mul_(self.momentum).add_(batch_mean, alpha=1 - self.momentum)


def _prototype_max(logits: torch.Tensor) -> torch.Tensor:
    """1×K maximum of each prototype's logits over this batch, and over all processes under DDP."""
    if logits.shape[0]:
        top = logits.amax(dim=0, keepdim=True)
    else:  # a process without rows still joins the all-reduce
        top = logits.new_full((1, logits.shape[1]), float("-inf"))
    if _distributed():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return top


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temp: float, n_iterations: int = 3,
                   n_samples: int | None = None) -> torch.Tensor:
    """Targets whose prototypes are used equally often over the batch: B×K logits → B×K rows summing to 1.

    Q = exp(logits/temp)ᵀ (K×B) is normalised to total 1, then ``n_iterations`` times each prototype row is
    scaled to sum 1/K and each sample column to 1/B. ``n_samples`` is the global batch size B (summed over
    processes); by default this process's rows times the world size. Sums are all-reduced under DDP.
    The head's trainable prototype magnitudes make the logits unbounded, so each prototype's logits are
    shifted by their maximum over the global batch before exp: the first row normalisation cancels
    that per-prototype factor exactly, and exp(logit/temp) can no longer overflow.
    """
    logits = teacher_logits.float()
    q = torch.exp((logits - _prototype_max(logits)) / temp).t()
    n_prototypes = q.shape[0]
    if n_samples is None:
        n_samples = q.shape[1] * (dist.get_world_size() if _distributed() else 1)
    q /= _all_reduce_sum(q.sum())
    for _ in range(n_iterations):
        q /= _all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= n_samples
    return (q * n_samples).t()
