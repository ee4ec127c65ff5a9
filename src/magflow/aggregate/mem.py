"""Masked embedding modelling (MEM): hide a fixed ratio of a region's tiles, predict their embeddings.

A fixed ratio r of each region's valid tokens is masked (round(r·n) of n, at least one masked and one
visible when n ≥ 2). The encoder sees only the visible tokens (gathered, padded per batch); the decoder
re-inserts a learned mask token at every masked position, adds its own position encodings and predicts
the tile embedding there. The loss is the negative cosine similarity on masked tokens only, weighted so
that every magnification contributes equally in expectation: with m of n valid tokens masked, a token
is masked with probability m/n, so the weight n / (L·m·n_s) of a token at scale s (n_s valid tokens
there, L scales with any) makes each scale's expected total weight 1/L, whatever its token count.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from magflow.aggregate.batch import RegionBatch
from magflow.aggregate.mixer import (MixerConfig, MixerOutput, MixingEncoder, PositionEncoding, build_blocks,
                                     init_weights, key_mask)


def mask_tokens(valid: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """B×N bool: round(ratio·n) of each row's n valid tokens, uniformly at random (clipped to [1, n−1])."""
    n = valid.sum(1)
    count = torch.round(ratio * n.double()).long().clamp(min=1)
    count = torch.minimum(count, n - 1).clamp(min=0)
    scores = torch.rand(valid.shape, generator=generator).to(valid.device)
    scores = scores.masked_fill(~valid, 2.0)  # invalid tokens rank last
    rank = scores.argsort(1).argsort(1)
    return (rank < count[:, None]) & valid


def scale_weights(masked: Tensor, valid: Tensor, scale_id: Tensor, n_scales: int) -> Tensor:
    """B×N per-token loss weights: n / (L·m·n_s) on masked tokens, 0 elsewhere (see the module docstring)."""
    per_scale = torch.zeros(valid.shape[0], n_scales, device=valid.device).scatter_add_(
        1, scale_id, valid.float())                                  # n_s
    scales = (per_scale > 0).sum(1, keepdim=True).float()            # L
    n = valid.sum(1, keepdim=True).float()
    m = masked.sum(1, keepdim=True).float()
    n_s = per_scale.gather(1, scale_id)
    weight = n / (scales * m.clamp(min=1) * n_s.clamp(min=1))
    return torch.where(masked, weight, torch.zeros_like(weight))


def masked_cosine_loss(prediction: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Mean over regions of Σ_tokens weight · (−cos(prediction, target)); zero-weight tokens add nothing."""
    cosine = nn.functional.cosine_similarity(prediction.float(), target.float(), dim=-1, eps=1e-6)
    cosine = torch.where(weights > 0, cosine, torch.zeros_like(cosine))  # no NaN from ignored tokens leaks in
    return -(weights * cosine).sum(1).mean()


class Visible(NamedTuple):
    index: Tensor  # B×K: the visible tokens' positions in the full sequence, in order
    kept: Tensor   # B×K bool: False on padding


def gather_visible(visible: Tensor) -> Visible:
    """The visible tokens of each row, first-come order, padded to the row with the most."""
    k = max(int(visible.sum(1).max()), 1)
    order = (~visible).to(torch.int8).argsort(dim=1, stable=True)[:, :k]
    return Visible(order, visible.gather(1, order))


def _take(values: Tensor, index: Tensor) -> Tensor:
    extra = values.shape[2:]
    return values.gather(1, index.view(*index.shape, *([1] * len(extra))).expand(*index.shape, *extra))


class MemDecoder(nn.Module):
    """Encoder outputs of the visible tokens + mask tokens → predicted tile embeddings at every position."""

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        dim = config.decoder_dim
        self.n_cls = config.n_cls
        self.embed = nn.Linear(config.width, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = PositionEncoding(dim, config.max_grid, config.n_scales)
        self.blocks = build_blocks(dim, config.decoder_depth, config.heads, config.mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, config.in_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, encoded: MixerOutput, visible: Visible, batch: RegionBatch) -> Tensor:
        b, n = batch.valid.shape
        source = self.embed(encoded.patches)
        dim = source.shape[-1]
        slot = torch.where(visible.kept, visible.index, torch.full_like(visible.index, n))  # padding → a spare slot
        x = self.mask_token.to(source.dtype).expand(b, n + 1, dim).scatter(1, slot[..., None].expand(-1, -1, dim),
                                                                           source)
        x = x[:, :n] + self.pos(batch.scale_id, batch.position)
        x = torch.cat([self.embed(encoded.cls), x], 1)
        mask = key_mask(batch.valid, self.n_cls)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return self.head(self.norm(x)[:, self.n_cls:])


class MemResult(NamedTuple):
    loss: Tensor
    cls: Tensor         # B×n_cls×width of the encoded visible tokens
    per_scale: Tensor   # n_scales: the weighted loss of each scale's tokens (sums to ``loss``)


class MEM(nn.Module):
    """The mixing encoder with its MEM decoder; ``encoder`` is what is kept after pretraining."""

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MixingEncoder(config)
        self.decoder = MemDecoder(config)

    def forward(self, batch: RegionBatch, masked: Tensor) -> MemResult:
        visible = gather_visible(batch.valid & ~masked)
        encoded = self.encoder(_take(batch.tokens, visible.index), _take(batch.scale_id, visible.index),
                               _take(batch.position, visible.index), visible.kept)
        prediction = self.decoder(encoded, visible, batch)
        weights = scale_weights(masked, batch.valid, batch.scale_id, self.config.n_scales)
        loss = masked_cosine_loss(prediction, batch.tokens, weights)
        with torch.no_grad():
            cosine = nn.functional.cosine_similarity(prediction.float(), batch.tokens.float(), dim=-1, eps=1e-6)
            terms = -(weights * torch.where(weights > 0, cosine, torch.zeros_like(cosine)))
            per_scale = torch.zeros(len(batch), self.config.n_scales, device=terms.device).scatter_add_(
                1, batch.scale_id, terms).mean(0)
        return MemResult(loss, encoded.cls, per_scale)
