"""The mixing encoder: a pre-norm transformer over the frozen tile embeddings of one mixed-scale region.

Each token is one tile embedding. The patch embedding is a linear layer; a token's learned position
encoding is the sum of a column and a row table (indexed in finest-scale cells, see ``position``
below) and a scale table, so a coarse tile and the finer tiles it contains share their top-left
position and differ by scale. ``n_cls`` learned class tokens (registers) are prepended and carry no
position. Blocks are timm's ViT block with a SwiGLU MLP (ratio ``mlp_ratio``); attention skips keys
that are not ``valid`` (background, or hidden by MEM), so an absent tile changes nothing.

``position`` is the token's top-left corner in finest-scale cells within the region: a tile at
(x, y) on scale s (in its own cells) has position (x, y)·2^(l−1−s) (``magflow.aggregate.regions``
builds it). It must stay below ``max_grid``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from timm.layers import SwiGLU, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from magflow.aggregate.settings import MixerConfig
from magflow.errors import ConfigError



class MixerOutput(NamedTuple):
    cls: Tensor      # B×n_cls×width, after the final norm
    patches: Tensor  # B×N×width, after the final norm; zero where the token is not valid


def build_blocks(dim: int, depth: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    """Pre-norm timm ViT blocks with a SwiGLU MLP (shared by the encoder and the MEM decoder)."""
    return nn.ModuleList(Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, mlp_layer=SwiGLU,
                               act_layer=nn.SiLU, norm_layer=nn.LayerNorm) for _ in range(depth))


def init_weights(module: nn.Module) -> None:
    """ViT-style init: truncated normal (std 0.02) linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def key_mask(valid: Tensor, n_cls: int) -> Tensor:
    """B×1×1×(n_cls+N) boolean attention mask (True = attend), class tokens always attended."""
    cls = torch.ones(valid.shape[0], n_cls, dtype=torch.bool, device=valid.device)
    return torch.cat([cls, valid.bool()], 1)[:, None, None, :]


class PositionEncoding(nn.Module):
    """Learned spatial (column + row table) and scale encodings, summed."""

    def __init__(self, dim: int, max_grid: int, n_scales: int) -> None:
        super().__init__()
        self.max_grid = max_grid
        self.pos_col = nn.Parameter(torch.zeros(max_grid, dim))
        self.pos_row = nn.Parameter(torch.zeros(max_grid, dim))
        self.scale_embed = nn.Parameter(torch.zeros(n_scales, dim))
        for table in (self.pos_col, self.pos_row, self.scale_embed):
            trunc_normal_(table, std=0.02)

    def forward(self, scale_id: Tensor, position: Tensor) -> Tensor:
        if position.numel() and int(position.max()) >= self.max_grid:
            raise ConfigError(f"a token position ({int(position.max())}) is beyond mixer.max_grid "
                              f"({self.max_grid}); raise mixer.max_grid to at least t·2^(levels−1)")
        return self.pos_col[position[..., 0]] + self.pos_row[position[..., 1]] + self.scale_embed[scale_id]


class MixingEncoder(nn.Module):
    """tokens B×N×in_dim (+ scale id, position, valid mask) → class tokens and patch tokens."""

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = nn.Linear(config.in_dim, config.width)
        self.pos = PositionEncoding(config.width, config.max_grid, config.n_scales)
        self.cls_token = nn.Parameter(torch.zeros(1, config.n_cls, config.width))
        self.blocks = build_blocks(config.width, config.depth, config.heads, config.mlp_ratio)
        self.norm = nn.LayerNorm(config.width)
        self.apply(init_weights)
        trunc_normal_(self.cls_token, std=0.02)

    @property
    def width(self) -> int:
        return self.config.width

    def embed(self, tokens: Tensor, scale_id: Tensor, position: Tensor) -> Tensor:
        """Patch embedding plus position encodings (B×N×width), before the class tokens are prepended."""
        return self.patch_embed(tokens) + self.pos(scale_id, position)

    def forward(self, tokens: Tensor, scale_id: Tensor, position: Tensor, valid: Tensor) -> MixerOutput:
        x = self.embed(tokens, scale_id, position)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], 1)
        mask = key_mask(valid, self.config.n_cls)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x)
        n_cls = self.config.n_cls
        patches = x[:, n_cls:] * valid[..., None].to(x.dtype)
        return MixerOutput(cls=x[:, :n_cls], patches=patches)

    def layer_id(self, param_name: str) -> int:
        return layer_id(param_name, self.config.depth)


def layer_id(param_name: str, depth: int) -> int:
    """Layer of an encoder parameter for layer-wise lr decay: 0 embeddings, 1..depth blocks, depth+1 the rest.

    Names are as in ``MixingEncoder.named_parameters()`` (an optional ``encoder.`` or ``module.``
    prefix is ignored).
    """
    for prefix in ("module.", "encoder."):
        param_name = param_name.removeprefix(prefix)
    if param_name.startswith(("patch_embed.", "pos.", "cls_token")):
        return 0
    if param_name.startswith("blocks."):
        return int(param_name.split(".")[1]) + 1
    return depth + 1
