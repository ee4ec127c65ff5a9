"""The trained teacher backbone as a timm-compatible safetensors file, with a JSON model card beside it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from magflow.atomic import atomic_path
from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD
from magflow.pretrain.backbone import Backbone, build_backbone
from magflow.weights_file import save_weights

WEIGHTS = "teacher_backbone.safetensors"
CARD = "model_card.json"


def architecture(backbone: Backbone, timm_name: str, timm_kwargs: dict[str, Any], img_size: int) -> dict[str, Any]:
    """What ``build_backbone`` needs to rebuild this ViT, and what a user needs to feed it."""
    vit = backbone.vit
    return {
        "timm_name": timm_name,
        "timm_kwargs": dict(timm_kwargs),
        "embed_dim": vit.embed_dim,
        "depth": len(vit.blocks),
        "num_heads": vit.blocks[0].attn.num_heads,
        "patch_size": vit.patch_embed.patch_size[0],
        "img_size": img_size,
        "reg_tokens": vit.num_reg_tokens,
        "dynamic_img_size": True,
        "input": {"range": "RGB in [0, 1], then normalised", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "output": "CLS token and patch tokens after the final norm (no head)",
    }


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of the weights themselves: names, dtypes, shapes and bytes, in name order.

    It is equal exactly when the weights are, whatever the file's metadata; the file itself is also
    byte-identical for equal weights and metadata (see :mod:`magflow.weights_file`).
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_teacher(backbone: Backbone, out_dir: str | os.PathLike[str], card: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``teacher_backbone.safetensors`` (the timm ViT's state dict, float32) and ``model_card.json``.

    The mask token is left out: it is only used by iBOT during pretraining.
    """
    out_dir = Path(out_dir)
    tensors = {name: tensor.detach().float().cpu().contiguous() for name, tensor in backbone.vit.state_dict().items()}
    weights, card_path = out_dir / WEIGHTS, out_dir / CARD
    save_weights(tensors, weights, {"format": "pt", "timm_name": card["architecture"]["timm_name"]})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = {**card, "weights": {"file": WEIGHTS, "sha256": digest, "tensors_sha256": tensors_sha256(tensors),
                                "dtype": "float32",
                                "keys": "timm VisionTransformer state dict (num_classes=0)"}}
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str) + "\n")
    return weights, card_path


def load_teacher(out_dir: str | os.PathLike[str]) -> Backbone:
    """Rebuild an exported teacher backbone from its model card and weights (in eval mode)."""
    out_dir = Path(out_dir)
    arch = json.loads((out_dir / CARD).read_text())["architecture"]
    return build_backbone(arch["timm_name"], img_size=arch["img_size"], patch_size=arch["patch_size"],
                          reg_tokens=arch["reg_tokens"], weights_path=out_dir / WEIGHTS, **arch["timm_kwargs"]).eval()
