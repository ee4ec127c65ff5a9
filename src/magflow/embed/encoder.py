"""Frozen encoders to embed with: a magflow run's exported teacher, or an external timm model.

A run's model directory holds ``teacher_backbone.safetensors`` (the timm ViT's state dict) and
``model_card.json`` (see ``magflow.pretrain.export``). An external model (UNI2-, Virchow2- or
Prov-GigaPath-style, or the continuous-magnification authors' release) comes in one of the formats of
:mod:`magflow.embed.external`: a timm name with a local weights file, timm's ``local-dir`` folder, a model
in the local Hugging Face cache (``hf-hub:``, loaded from the cache's snapshot folder with the network
never touched), or an authors' release folder. Nothing is ever downloaded.

The encoder takes RGB views in [0, 1], normalises them as the model expects and returns one feature
vector per view: ``cls`` (the CLS token after the final norm), ``cls+mean_patch`` (that, then the mean of
the patch tokens, register tokens excluded) or ``pooled`` (``model(x)`` of the timm model built with
``num_classes=0``, its own pooling and norm: what the benchmark papers' evaluation code takes).
"""

from __future__ import annotations

import importlib
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
from magflow.embed.external import FEATURES, ExternalModel, ModelFiles
from magflow.errors import ConfigError
from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD
from magflow.pretrain.backbone import Backbone, build_backbone
from magflow.pretrain.export import CARD, WEIGHTS

# timm keyword arguments whose value names a class or function, and the modules (in order) a string value
# is looked up in, e.g. ``mlp_layer: SwiGLUPacked`` -> timm.layers.SwiGLUPacked, ``act_layer: SiLU`` ->
# torch.nn.SiLU (a dotted name such as ``torch.nn.SiLU`` must start with one of them). A name found in none
# of them is refused, naming the key; act_layer and norm_layer also take timm's own lower-case names
# (``gelu``, ``layernorm``). Other keys are passed as they are.
NAMED_KWARGS: dict[str, tuple[str, ...]] = {
    "mlp_layer": ("timm.layers",),
    "act_layer": ("timm.layers", "torch.nn"),
    "norm_layer": ("timm.layers", "torch.nn"),
    "embed_layer": ("timm.layers",),
    "block_fn": ("timm.models.vision_transformer", "timm.layers"),
}
TIMM_RESOLVERS = {"act_layer": "get_act_layer", "norm_layer": "get_norm_layer"}
FEATURE_DEFINITIONS = {
    "cls": "CLS token after the final norm",
    "cls+mean_patch": "CLS token after the final norm, then the mean of the patch tokens (register tokens excluded)",
    "pooled": "model(x) of the timm model with num_classes=0 (its own pooling and norm, no head)",
}


class Encoder(nn.Module):
    """views (B×3×H×W, RGB in [0, 1]) → features (B×D, or B×2D with the mean patch token).

    ``feature`` is one of ``cls``, ``cls+mean_patch`` or ``pooled``; None takes ``mean_patch`` to choose
    between the first two.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], mean_patch: bool,
                 card: dict[str, Any], name: str, feature: str | None = None) -> None:
        super().__init__()
        feature = feature or ("cls+mean_patch" if mean_patch else "cls")
        if feature not in FEATURES:
            raise ConfigError(f"model {name}: feature '{feature}' is not one of {', '.join(FEATURES)}")
        if feature != "pooled" and not isinstance(model, Backbone):
            raise ConfigError(f"model {name}: the {feature} feature needs a ViT with a class token; this timm "
                              "model has none, use feature: pooled")
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        self.feature = feature
        self.card = card
        self.name = name
        self.eval().requires_grad_(False)

    @property
    def mean_patch(self) -> bool:
        return self.feature == "cls+mean_patch"

    @property
    def timm_model(self) -> nn.Module:
        """The timm model itself (a run's or a ViT's inside its :class:`Backbone`)."""
        return self.model.vit if isinstance(self.model, Backbone) else self.model

    @property
    def embed_dim(self) -> int:
        model = self.model
        if self.feature == "pooled":
            return int(self.timm_model.num_features)
        return model.embed_dim if isinstance(model, Backbone) else int(model.num_features)

    @property
    def feature_dim(self) -> int:
        return self.embed_dim * (2 if self.mean_patch else 1)

    @property
    def features(self) -> str:
        return self.feature

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        x = (views - self.mean.to(views.dtype)) / self.std.to(views.dtype)
        if self.feature == "pooled":
            return self.timm_model(x)
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


def timm_kwargs(kwargs: Mapping[str, Any], where: str = "timm_kwargs") -> dict[str, Any]:
    """``kwargs`` with the class- or function-valued ones (:data:`NAMED_KWARGS`) given by name looked up."""
    out = dict(kwargs)
    for key, modules in NAMED_KWARGS.items():
        value = out.get(key)
        if not isinstance(value, str):
            continue
        module, dot, attr = value.rpartition(".")  # "torch.nn.SiLU": only from one of the key's modules
        search = [module] if dot and module in modules else [] if dot else list(modules)
        found = [getattr(importlib.import_module(m), attr) for m in search
                 if callable(getattr(importlib.import_module(m), attr, None))]
        if not found and key in TIMM_RESOLVERS:
            try:
                found = [getattr(timm.layers, TIMM_RESOLVERS[key])(value)]
            except (KeyError, ValueError, AssertionError):
                found = []
        if not found or not callable(found[0]):
            raise ConfigError(f"{where}.{key}: '{value}' is not a class or function in {' or '.join(modules)} "
                              f"(the modules {key} is looked up in)")
        out[key] = found[0]
    return out


def _create(spec: ExternalModel, files: ModelFiles, where: str) -> nn.Module:
    """timm builds the model: from the folder with its weights (local-dir, hf-hub), or bare (loaded after)."""
    kwargs = timm_kwargs(spec.timm_kwargs, f"embed.external.{spec.name}.timm_kwargs")
    from_folder = files.format in ("local-dir", "hf-hub")
    size = {"img_size": files.img_size} if files.img_size is not None else {}
    try:
        try:
            return timm.create_model(files.architecture, pretrained=from_folder, num_classes=0,
                                     **{"dynamic_img_size": True, **size, **kwargs})
        except TypeError:  # not a ViT: no image size arguments
            return timm.create_model(files.architecture, pretrained=from_folder, num_classes=0, **kwargs)
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        source = f" from {files.folder}" if from_folder else ""
        raise ConfigError(f"{where}: timm cannot build it{source}: {error}; check timm_kwargs (e.g. "
                          "mlp_layer: SwiGLUPacked, act_layer: SiLU)") from None


def _load_weights(model: nn.Module, weights: Path, where: str) -> None:
    is_vit = isinstance(model, VisionTransformer) and model.cls_token is not None
    result = load_checkpoint(model, str(weights), strict=False, filter_fn=checkpoint_filter_fn if is_vit else None)
    unexpected = [key for key in result.unexpected_keys if not key.startswith(("head.", "fc.", "classifier."))]
    if result.missing_keys or unexpected:
        raise ConfigError(f"{where}: weights {weights} do not fit: missing {result.missing_keys[:5]}, unexpected "
                          f"{unexpected[:5]}; check the architecture and timm_kwargs")


def load_external_encoder(spec: ExternalModel, mean_patch: bool = False) -> Encoder:
    """An external model in any of the formats of :mod:`magflow.embed.external`; nothing is downloaded."""
    files = spec.resolve()
    where = f"external model '{spec.name}' ({files.format} {files.location})"
    model = _create(spec, files, where)
    if files.format in ("timm-weights", "release"):
        _load_weights(model, files.weights, where)
    model.eval()
    is_vit = isinstance(model, VisionTransformer) and model.cls_token is not None
    feature = spec.feature or (("cls+mean_patch" if mean_patch else "cls") if is_vit else "pooled")
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    card = {"model": spec.name, "external": True, "source": files.record(),
            "architecture": {"timm_name": str(model.pretrained_cfg.get("architecture") or files.architecture),
                             "timm_kwargs": dict(spec.timm_kwargs),
                             "img_size": list(img_size) if img_size is not None else None,
                             "embed_dim": int(model.num_features)},
            "feature": feature, "feature_definition": FEATURE_DEFINITIONS[feature],
            "weights": {"file": files.weights.name},
            "input": {"range": "RGB in [0, 1], then normalised", "mean": list(files.mean), "std": list(files.std),
                      "normalisation_from": dict(files.normalisation_from)}}
    return Encoder(Backbone(model) if is_vit else model, files.mean, files.std, mean_patch, card, spec.name, feature)


def load_encoder(source: str | os.PathLike[str] | ExternalModel | InitControl, mean_patch: bool = False,
                 name: str | None = None) -> Encoder:
    """A run's model directory, an :class:`ExternalModel` or a run's :class:`InitControl`; returns an eval-mode
    :class:`Encoder`."""
    if isinstance(source, ExternalModel):
        return load_external_encoder(source, mean_patch)
    if isinstance(source, InitControl):
        return load_control_encoder(source, mean_patch, name)
    return load_run_encoder(source, mean_patch, name)
