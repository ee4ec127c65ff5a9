"""A timm ViT backbone with a learned iBOT mask token, returning CLS and patch tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
from timm.models import load_checkpoint
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from magflow.errors import ConfigError


class BackboneOutput(NamedTuple):
    cls: torch.Tensor      # B×D, after the final norm
    patches: torch.Tensor  # B×N×D, after the final norm, register tokens excluded


class Backbone(nn.Module):
    """Wraps a timm ``VisionTransformer``; its submodules do all the work except masking.

    Masked patch embeddings are replaced by ``mask_token`` before the positional embedding
    is added, so the student still knows where a masked patch sits (as in iBOT/DINOv2).
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer) or vit.cls_token is None:
            raise ConfigError(f"backbone {type(vit).__name__} is not a timm VisionTransformer with a class token; "
                              "name a ViT such as vit_small_patch16_224")
        self.vit = vit
        self.mask_token = nn.Parameter(torch.zeros(1, vit.embed_dim))

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_blocks(self) -> int:
        return len(self.vit.blocks)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> BackboneOutput:
        """``images``: B×3×H×W; ``masks``: optional B×N bool, N = (H/p)·(W/p) patches in row-major order."""
        vit = self.vit
        x = vit.patch_embed(images)  # B×h×w×D with a dynamic image size, else B×N×D
        if masks is not None:
            n_patches = x.shape[1] * x.shape[2] if x.ndim == 4 else x.shape[1]
            if masks.shape != (x.shape[0], n_patches):
                raise ValueError(f"masks must be {(x.shape[0], n_patches)} for these images, got {tuple(masks.shape)}")
            x = torch.where(masks.reshape(*x.shape[:-1], 1), self.mask_token.to(x.dtype), x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        return BackboneOutput(cls=x[:, 0], patches=x[:, vit.num_prefix_tokens:])


def build_backbone(
    name: str = "vit_small_patch16_224",
    img_size: int = 224,
    patch_size: int = 16,
    drop_path_rate: float = 0.0,
    reg_tokens: int = 0,
    dynamic_img_size: bool = True,
    weights_path: str | Path | None = None,
    **timm_kwargs: Any,
) -> Backbone:
    """A randomly initialised timm ViT (never downloaded), optionally loaded from a local file.

    ``reg_tokens=0`` keeps the named model's own register count. ``weights_path`` is a timm-style
    ``.safetensors``/``.pt``/``.pth`` state dict; position embeddings are resampled to ``img_size``.
    ``timm_kwargs`` override the named model's arguments (e.g. ``embed_dim``, ``depth``, ``num_heads``).
    """
    extra = {"reg_tokens": reg_tokens} if reg_tokens > 0 else {}
    vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, patch_size=patch_size,
                            dynamic_img_size=dynamic_img_size, drop_path_rate=drop_path_rate,
                            **extra, **timm_kwargs)
    backbone = Backbone(vit)
    if weights_path is not None:
        _load_vit_weights(vit, Path(weights_path))
    return backbone


def _load_vit_weights(vit: VisionTransformer, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"backbone weights file {path} does not exist; fix the path or leave it empty")
    result = load_checkpoint(vit, str(path), strict=False, filter_fn=checkpoint_filter_fn)
    unexpected = [key for key in result.unexpected_keys if not key.startswith("head.")]  # a classifier is fine
    if result.missing_keys or unexpected:
        raise ConfigError(f"backbone weights {path} do not fit this ViT: missing {result.missing_keys[:5]}, "
                          f"unexpected {unexpected[:5]}; check the model name, patch size and register tokens")
