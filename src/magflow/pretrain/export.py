"""The trained teacher backbone as a timm-compatible safetensors file, with a JSON model card beside it, and
the same weights as a timm ``local-dir`` folder (``timm/`` beside them) ready for the Hugging Face Hub.

The folder holds ``config.json`` (``architecture``, ``num_features``, ``model_args``, ``pretrained_cfg``),
``model.safetensors`` and ``README.md`` (a model card with Hugging Face front matter), so
``timm.create_model("local-dir:results/models/RUN/timm", pretrained=True)`` rebuilds the teacher and
``model(x)`` gives the CLS token magflow embeds with; ``hf upload ORG/NAME results/models/RUN/timm``
publishes it as it is, and then ``hf-hub:ORG/NAME`` loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from magflow.atomic import atomic_path
from magflow.errors import ConfigError
from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD
from magflow.pretrain.backbone import Backbone, build_backbone
from magflow.weights_file import save_weights

WEIGHTS = "teacher_backbone.safetensors"
CARD = "model_card.json"
TIMM_DIR = "timm"  # the timm local-dir folder inside a run's directory
TIMM_FILES = ("config.json", "model.safetensors", "README.md")


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
    export_timm(backbone, out_dir / TIMM_DIR, card, tensors)
    return weights, card_path


def timm_config(backbone: Backbone, arch: dict[str, Any]) -> dict[str, Any]:
    """timm's ``config.json`` of the backbone: what ``timm.create_model(architecture, **model_args)`` rebuilds it
    from, and the ``pretrained_cfg`` (normalisation, input size) data pipelines read."""
    vit, img_size = backbone.vit, int(arch["img_size"])
    norm = arch.get("input") or {}
    model_args = {**dict(arch.get("timm_kwargs") or {}), "img_size": img_size,
                  "patch_size": int(vit.patch_embed.patch_size[0]), "embed_dim": int(vit.embed_dim),
                  "depth": len(vit.blocks), "num_heads": int(vit.blocks[0].attn.num_heads),
                  "reg_tokens": int(vit.num_reg_tokens), "global_pool": vit.global_pool, "dynamic_img_size": True}
    pretrained_cfg = {"tag": "magflow", "custom_load": False, "input_size": [3, img_size, img_size],
                      "fixed_input_size": False, "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                      "mean": list(norm.get("mean", IMAGENET_MEAN)), "std": list(norm.get("std", IMAGENET_STD)),
                      "num_classes": 0, "pool_size": None, "first_conv": "patch_embed.proj", "classifier": "head"}
    return {"architecture": arch["timm_name"], "num_classes": 0, "num_features": int(vit.num_features),
            "global_pool": vit.global_pool, "model_args": model_args, "pretrained_cfg": pretrained_cfg}


def export_timm(backbone: Backbone, folder: str | os.PathLike[str], card: dict[str, Any],
                tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the timm ``local-dir`` folder of the backbone: ``config.json``, ``model.safetensors`` (the same
    tensors as the teacher export, byte-identical for equal weights) and the ``README.md`` model card."""
    folder = Path(folder)
    if tensors is None:
        tensors = {name: t.detach().float().cpu().contiguous() for name, t in backbone.vit.state_dict().items()}
    config = timm_config(backbone, card["architecture"])
    save_weights(tensors, folder / "model.safetensors", {"format": "pt"})
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text(hub_readme(card, config))
    return folder


def _commit(card: dict[str, Any]) -> str:
    git = card.get("commit")
    if isinstance(git, dict):
        return f"{git.get('commit', 'unknown')}{' (uncommitted changes)' if git.get('dirty') else ''}"
    return str(git or "unknown")


def _sampler(card: dict[str, Any]) -> str:
    sampler = card.get("sampler")
    if isinstance(sampler, dict):
        parts = [f"{k} {sampler[k]}" for k in ("strategy", "kernel", "lam", "mpp", "du_mpps") if sampler.get(k)
                 is not None]
        if sampler.get("range"):
            parts.append(f"range {sampler['range'][0]}-{sampler['range'][1]} mpp")
        return ", ".join(parts)
    if isinstance(card.get("mad"), dict):
        return "magnification-aware distillation: " + ", ".join(f"{k} {v}" for k, v in card["mad"].items()
                                                                  if not isinstance(v, (dict, list)))
    return "none recorded"


def _data(card: dict[str, Any]) -> str:
    data = card.get("data")
    if not isinstance(data, dict):
        return "none recorded"
    stores = data.get("stores") or []
    parts = [f"{len(stores)} tile store(s)"] if stores else []
    parts += [f"{k} {data[k]}" for k in ("tiles", "scales", "source_px", "cell_px") if data.get(k) is not None]
    return ", ".join(parts)


def hub_readme(card: dict[str, Any], config: dict[str, Any]) -> str:
    """A Hugging Face model card (YAML front matter, then Markdown) from the run's model card."""
    pcfg, args = config["pretrained_cfg"], config["model_args"]
    training = card.get("training") or {}
    rows = [("Model", card.get("model", "magflow teacher backbone")),
            ("Strategy", card.get("strategy", "none recorded")),
            ("Sampler", _sampler(card)),
            ("Data", _data(card)),
            ("Iterations", card.get("iterations", "none recorded")),
            ("Global batch", training.get("global_batch", "none recorded")),
            ("Seed", card.get("seed", "none recorded")),
            ("Precision", card.get("precision", "none recorded")),
            ("magflow commit", _commit(card)),
            ("Weights sha256 (teacher export)", (card.get("weights") or {}).get("sha256", "none recorded"))]
    table = "\n".join(f"| {name} | {str(value).replace('|', '/')} |" for name, value in rows)
    size = pcfg["input_size"][-1]
    return f"""---
library_name: timm
pipeline_tag: image-feature-extraction
tags:
- timm
- image-feature-extraction
- histopathology
- magflow
---

# {config['architecture']} pretrained with magflow

A self-supervised ViT teacher backbone (`{config['architecture']}`, patch {args['patch_size']}, embed dim
{args['embed_dim']}, {args['reg_tokens']} register tokens) for pathology tiles, trained by magflow.
No license is set: add a `license:` line to the front matter above before you share it.

| Setting | Value |
|---|---|
{table}

The full training record (config, views, sampler, package versions) is the run's `model_card.json`.

## Use

```python
import timm
import torch

model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()  # or "hf-hub:ORG/NAME"
x = torch.rand(1, 3, {size}, {size})  # RGB in [0, 1]
mean = torch.tensor({pcfg['mean']}).view(1, 3, 1, 1)
std = torch.tensor({pcfg['std']}).view(1, 3, 1, 1)
with torch.no_grad():
    features = model((x - mean) / std)  # 1 x {config['num_features']}: the CLS token after the final norm
```

Inputs are RGB in [0, 1], normalised with mean {pcfg['mean']} and std {pcfg['std']}, {size} px (other sizes
work: the position embeddings are interpolated). `model(x)` (`num_classes=0`, `global_pool="{config['global_pool']}"`)
returns the CLS token after the final norm, the feature magflow embeds with; `model.forward_features(x)`
gives every token.
"""


def export_timm_run(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``timm/`` of a run that finished before runs wrote it, from its teacher export and model card
    (the same bytes as the run would have written)."""
    run_dir = Path(run_dir)
    card_path = run_dir / CARD
    if not card_path.is_file() or not (run_dir / WEIGHTS).is_file():
        raise ConfigError(f"run directory {run_dir}: needs {WEIGHTS} and {CARD} (written when pretraining finishes)")
    return export_timm(load_teacher(run_dir), run_dir / TIMM_DIR, json.loads(card_path.read_text()))


def load_teacher(out_dir: str | os.PathLike[str]) -> Backbone:
    """Rebuild an exported teacher backbone from its model card and weights (in eval mode)."""
    out_dir = Path(out_dir)
    arch = json.loads((out_dir / CARD).read_text())["architecture"]
    return build_backbone(arch["timm_name"], img_size=arch["img_size"], patch_size=arch["patch_size"],
                          reg_tokens=arch["reg_tokens"], weights_path=out_dir / WEIGHTS, **arch["timm_kwargs"]).eval()
