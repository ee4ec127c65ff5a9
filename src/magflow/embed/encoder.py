"""Frozen encoders to embed with: a magflow run's exported teacher, or an external timm model.

A run's model directory holds ``teacher_backbone.safetensors`` (the timm ViT's state dict) and
``model_card.json`` (see ``magflow.pretrain.export``). An external baseline (UNI-, Virchow- or
H-optimus-style) is a timm architecture name, its keyword arguments and a local weights file: timm
builds it with ``pretrained=False`` and magflow never downloads anything, so a baseline without a
weights file is refused. Either way the encoder takes RGB views in [0, 1], normalises them as the
model expects and returns the CLS token after the final norm, optionally followed by the mean of
the patch tokens (register tokens excluded), as one feature vector per view.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import load_checkpoint
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from magflow.embed.control import InitControl, load_control_encoder
from magflow.embed.external import ExternalModel
from magflow.errors import ConfigError
from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD
from magflow.pretrain.backbone import Backbone, build_backbone
from magflow.pretrain.export import CARD, WEIGHTS

# Keyword arguments that name a class: a string is looked up in timm.layers (e.g. "SwiGLUPacked").
CLASS_KWARGS = ("mlp_layer", "norm_layer", "embed_layer", "block_fn")


class Encoder(nn.Module):
    """views (B×3×H×W, RGB in [0, 1]) → features (B×D, or B×2D with the mean patch token)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], mean_patch: bool,
                 card: dict[str, Any], name: str) -> None:
        super().__init__()
        if mean_patch and not isinstance(model, Backbone):
            raise ConfigError(f"model {name}: the mean patch token needs a ViT; this timm model has no patch tokens")
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        self.mean_patch = mean_patch
        self.card = card
        self.name = name
        self.eval().requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        model = self.model
        return model.embed_dim if isinstance(model, Backbone) else int(model.num_features)

    @property
    def feature_dim(self) -> int:
        return self.embed_dim * (2 if self.mean_patch else 1)

    @property
    def features(self) -> str:
        return "cls+mean_patch" if self.mean_patch else "cls"

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        x = (views - self.mean.to(views.dtype)) / self.std.to(views.dtype)
        if not isinstance(self.model, Backbone):
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        out = self.model(x)
        return torch.cat([out.cls, out.patches.mean(dim=1)], dim=1) if self.mean_patch else out.cls


def _architecture(card: dict[str, Any], where: Path) -> dict[str, Any]:
    """The card's architecture, from the exporter's nested form or a flat {architecture: name, ...} form."""
    arch = card.get("architecture")
    if isinstance(arch, str):
        arch = {"timm_name": arch, **{k: card[k] for k in ("img_size", "patch_size", "reg_tokens", "timm_kwargs")
                                      if k in card}}
    if not isinstance(arch, dict) or "timm_name" not in arch:
        raise ConfigError(f"{where}: `architecture` must name the timm model (a string, or a mapping with timm_name)")
    return arch


def load_run_encoder(model_dir: str | os.PathLike[str], mean_patch: bool = False, name: str | None = None) -> Encoder:
    """The exported teacher of a magflow run (its directory), in eval mode."""
    model_dir = Path(model_dir)
    card_path, weights = model_dir / CARD, model_dir / WEIGHTS
    if not card_path.is_file() or not weights.is_file():
        raise ConfigError(f"model directory {model_dir}: needs {WEIGHTS} and {CARD} (written when pretraining "
                          "finishes); train the run first or fix the path")
    card = json.loads(card_path.read_text())
    arch = _architecture(card, card_path)
    backbone = build_backbone(arch["timm_name"], img_size=int(arch.get("img_size", 224)),
                              patch_size=int(arch.get("patch_size", 16)), reg_tokens=int(arch.get("reg_tokens", 0)),
                              weights_path=weights, **dict(arch.get("timm_kwargs") or {}))
    norm = arch.get("input") or {}
    return Encoder(backbone, norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD), mean_patch, card,
                   name or model_dir.name)


def _timm_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    for key in CLASS_KWARGS:
        if isinstance(out.get(key), str):
            if not hasattr(timm.layers, out[key]):
                raise ConfigError(f"timm_kwargs.{key}: timm.layers has no '{out[key]}'")
            out[key] = getattr(timm.layers, out[key])
    return out


def _create(spec: ExternalModel, where: str) -> nn.Module:
    kwargs = _timm_kwargs(spec.timm_kwargs)
    try:
        try:
            vit_kwargs = {"img_size": spec.img_size, "dynamic_img_size": True, **kwargs}
            return timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **vit_kwargs)
        except TypeError:  # not a ViT: no image size arguments
            return timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **kwargs)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"{where}: timm cannot build it: {error}") from None


def load_external_encoder(spec: ExternalModel, mean_patch: bool = False) -> Encoder:
    """A timm model built with ``pretrained=False`` and loaded from ``spec.weights`` (never downloaded)."""
    where = f"external model '{spec.name}' ({spec.timm_name})"
    if not spec.weights:
        raise ConfigError(f"{where}: no local weights file given; magflow never downloads weights "
                          "(timm pretrained=False). Download them yourself and set `weights:` to the file")
    weights = Path(spec.weights)
    if not weights.is_file():
        raise ConfigError(f"{where}: weights file {weights} does not exist; fix `weights:`")
    if spec.timm_name.startswith(("hf-hub:", "hf_hub:")):
        raise ConfigError(f"{where}: hub names would fetch a config; give the timm architecture name "
                          "(e.g. vit_large_patch16_224) and its timm_kwargs instead")
    model = _create(spec, where)
    is_vit = isinstance(model, VisionTransformer) and model.cls_token is not None
    result = load_checkpoint(model, str(weights), strict=False, filter_fn=checkpoint_filter_fn if is_vit else None)
    unexpected = [key for key in result.unexpected_keys if not key.startswith(("head.", "fc.", "classifier."))]
    if result.missing_keys or unexpected:
        raise ConfigError(f"{where}: weights {weights} do not fit: missing {result.missing_keys[:5]}, unexpected "
                          f"{unexpected[:5]}; check timm_name and timm_kwargs")
    card = {"architecture": {"timm_name": spec.timm_name, "timm_kwargs": dict(spec.timm_kwargs),
                             "img_size": spec.img_size, "embed_dim": int(model.num_features)},
            "external": True, "weights": {"file": weights.name}, "input": {"mean": list(spec.mean),
                                                                          "std": list(spec.std)}}
    return Encoder(Backbone(model) if is_vit else model, spec.mean, spec.std, mean_patch, card, spec.name)


def load_encoder(source: str | os.PathLike[str] | ExternalModel | InitControl, mean_patch: bool = False,
                 name: str | None = None) -> Encoder:
    """A run's model directory, an :class:`ExternalModel` or a run's :class:`InitControl`; returns an eval-mode
    :class:`Encoder`."""
    if isinstance(source, ExternalModel):
        return load_external_encoder(source, mean_patch)
    if isinstance(source, InitControl):
        return load_control_encoder(source, mean_patch, name)
    return load_run_encoder(source, mean_patch, name)
