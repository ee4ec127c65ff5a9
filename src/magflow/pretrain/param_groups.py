"""AdamW parameter groups with layer-wise lr decay, and applying the schedules to them each iteration."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from magflow.pretrain.backbone import Backbone

_EMBEDDINGS = ("vit.patch_embed.", "vit.pos_embed", "vit.cls_token", "vit.reg_token", "vit.norm_pre.", "mask_token")


def decays(name: str) -> bool:
    """DINOv2's weight-decay rule by name: biases, norms and LayerScale gammas are exempt, all else decays.

    The tokens and the position embedding decay. So does the head's prototype magnitude (DINOv2's
    ``last_layer.weight_g``, here ``last_layer.parametrizations.weight.original0``): its name holds none
    of the three markers.
    """
    return not (name.endswith(".bias") or "norm" in name or "gamma" in name)


def backbone_lr_multiplier(name: str, num_blocks: int, layer_decay: float) -> float:
    """decay^(L+1−layer): embeddings and tokens are layer 0, block i is layer i+1, the final norm layer L+1."""
    if name.startswith(_EMBEDDINGS):
        layer = 0
    elif name.startswith("vit.blocks."):
        layer = int(name.split(".")[2]) + 1
    else:
        layer = num_blocks + 1
    return layer_decay ** (num_blocks + 1 - layer)


def build_param_groups(backbone: Backbone, heads: Iterable[nn.Module], layer_decay: float = 0.9,
                       patch_embed_lr_mult: float = 0.2) -> list[dict[str, Any]]:
    """Param groups for ``torch.optim.AdamW`` carrying ``lr_multiplier``, ``wd_multiplier`` and ``is_last_layer``.

    Backbone parameters get layer-wise lr decay (times ``patch_embed_lr_mult`` on the patch embedding);
    heads get 1. Weight decay follows :func:`decays`. Heads' ``last_layer`` parameters (the prototype
    directions and magnitudes) are marked for the freeze schedule.
    Frozen parameters are left out, and a head passed twice (DINO and iBOT sharing one) counts once.
    """
    named = [(name, param, backbone_lr_multiplier(name, backbone.num_blocks, layer_decay))
             for name, param in backbone.named_parameters()]
    named += [(f"head{i}.{name}", param, 1.0)
              for i, head in enumerate(heads) for name, param in head.named_parameters()]
    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, param, lr_multiplier in named:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if name.startswith("vit.patch_embed."):
            lr_multiplier *= patch_embed_lr_mult
        key = (lr_multiplier, 1.0 if decays(name) else 0.0, ".last_layer." in name)
        group = groups.setdefault(key, {"params": [], "param_names": [], "lr_multiplier": key[0],
                                        "wd_multiplier": key[1], "is_last_layer": key[2]})
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float, last_layer_lr: float) -> None:
    """Set each group's lr and weight decay for this iteration from its multipliers."""
    for group in optimizer.param_groups:
        group["lr"] = (last_layer_lr if group["is_last_layer"] else lr) * group["lr_multiplier"]
        group["weight_decay"] = weight_decay * group["wd_multiplier"]
