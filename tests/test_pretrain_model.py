"""Backbone, head, layer-wise lr groups on a ViT-S/16, the EMA teacher, and one DINOv2 step end to end."""

import copy
import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from magflow.errors import ConfigError
from magflow.pretrain import (Center, DINOHead, apply_schedules, build_backbone, build_param_groups, build_schedules,
                              dino_loss, ibot_loss, koleo_loss, mask_global_crops, update_teacher)
from magflow.pretrain.clipping import clip_grad_norm_per_submodule

DECAY, PATCH_MULT, DEPTH = 0.9, 0.2, 12


@pytest.fixture(scope="module")
def vit_small():
    torch.manual_seed(0)
    return build_backbone("vit_small_patch16_224").eval()


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    return DINOHead(384, num_prototypes=32, hidden_dim=64, bottleneck_dim=16)


def test_global_and_local_crops_give_cls_and_patch_tokens(vit_small):
    with torch.no_grad():
        global_out = vit_small(torch.randn(1, 3, 224, 224))
        local_out = vit_small(torch.randn(2, 3, 96, 96))
    assert global_out.cls.shape == (1, 384) and global_out.patches.shape == (1, 196, 384)
    assert local_out.cls.shape == (2, 384) and local_out.patches.shape == (2, 36, 384)


def test_unmasked_forward_is_timm_forward_features(vit_small):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = vit_small(images)
        tokens = vit_small.vit.forward_features(images)
    torch.testing.assert_close(ours.cls, tokens[:, 0])
    torch.testing.assert_close(ours.patches, tokens[:, 1:])


def test_mask_token_replaces_patches_before_the_position_embedding(vit_small):
    masks = torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        vit_small.mask_token.normal_()
        a = vit_small(torch.randn(2, 3, 64, 64), masks)
        b = vit_small(torch.randn(2, 3, 64, 64), masks)
        vit_small.mask_token.zero_()
    torch.testing.assert_close(a.patches, b.patches)  # the pixels are gone
    assert (a.patches[0, 0] - a.patches[0, 5]).abs().max() > 1e-3  # but each position is still known


def test_masks_of_the_wrong_shape_are_refused(vit_small):
    with pytest.raises(ValueError, match=r"\(1, 16\)"):
        vit_small(torch.randn(1, 3, 64, 64), torch.zeros(1, 15, dtype=torch.bool))


def test_register_tokens_are_excluded_from_the_patches():
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny_patch16_224", img_size=32, reg_tokens=4)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 32, 32))
    assert backbone.vit.num_prefix_tokens == 5 and out.patches.shape == (1, 4, 192)


def test_local_weights_load_and_resample_position_embeddings(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("vit_tiny_patch16_224", img_size=64)
    save_file(source.vit.state_dict(), tmp_path / "tiny.safetensors")
    loaded = build_backbone("vit_tiny_patch16_224", img_size=64, weights_path=tmp_path / "tiny.safetensors")
    for name, tensor in source.vit.state_dict().items():
        torch.testing.assert_close(loaded.vit.state_dict()[name], tensor)
    resized = build_backbone("vit_tiny_patch16_224", img_size=32, weights_path=tmp_path / "tiny.safetensors")
    assert resized.vit.pos_embed.shape == (1, 5, 192)
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("vit_tiny_patch16_224", img_size=32, weights_path=tmp_path / "missing.pt")


def test_head_prototypes_start_at_unit_norm_with_a_trainable_magnitude(head):
    magnitude = head.last_layer.parametrizations.weight.original0
    assert magnitude.requires_grad and torch.all(magnitude == 1)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(32))
    for layer in (head.mlp[0], head.mlp[2], head.mlp[4]):
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.15) and torch.all(layer.bias == 0)
    logits = head(torch.randn(5, 384))
    assert logits.shape == (5, 32) and logits.abs().max() <= 1 + 1e-6  # cosines while the magnitude is 1


def _expected_multipliers(name: str) -> tuple[float, float]:
    """Layer-wise lr decay and weight-decay multipliers for a ViT-S backbone parameter, from the spec."""
    no_decay = name.endswith(".bias") or re.search(r"norm\d?\.weight$", name)  # the tokens decay, as in DINOv2
    if block := re.match(r"vit\.blocks\.(\d+)\.", name):
        lr = DECAY ** (DEPTH + 1 - (int(block.group(1)) + 1))
    elif name.startswith("vit.patch_embed."):
        lr = DECAY ** (DEPTH + 1) * PATCH_MULT
    elif name in {"vit.pos_embed", "vit.cls_token", "mask_token"}:
        lr = DECAY ** (DEPTH + 1)
    else:
        assert name.startswith("vit.norm.")
        lr = 1.0
    return lr, 0.0 if no_decay else 1.0


def test_layer_wise_lr_multipliers_on_vit_small(vit_small, head):
    groups = build_param_groups(vit_small, [head, head], layer_decay=DECAY, patch_embed_lr_mult=PATCH_MULT)
    seen = {}
    for group in groups:
        for name in group["param_names"]:
            assert name not in seen
            seen[name] = (group["lr_multiplier"], group["wd_multiplier"], group["is_last_layer"])
    backbone_names = {name for name, _ in vit_small.named_parameters()}
    head_names = {f"head0.{name}" for name, p in head.named_parameters() if p.requires_grad}
    assert set(seen) == backbone_names | head_names  # shared head once
    for name in backbone_names:
        lr, wd = _expected_multipliers(name)
        assert seen[name][0] == pytest.approx(lr) and seen[name][1] == wd and not seen[name][2], name
    assert seen["vit.blocks.0.attn.qkv.weight"][0] == pytest.approx(0.9 ** 12)
    assert seen["vit.blocks.11.mlp.fc1.weight"][0] == pytest.approx(0.9)
    assert seen["vit.patch_embed.proj.weight"][0] == pytest.approx(0.2 * 0.9 ** 13)
    assert seen["head0.mlp.0.weight"] == (1.0, 1.0, False) and seen["head0.mlp.0.bias"] == (1.0, 0.0, False)
    assert seen["head0.last_layer.parametrizations.weight.original1"] == (1.0, 1.0, True)
    assert seen["head0.last_layer.parametrizations.weight.original0"] == (1.0, 1.0, True)
    assert seen["vit.cls_token"][1] == seen["vit.pos_embed"][1] == seen["mask_token"][1] == 1.0
    n_params = sum(len(group["params"]) for group in groups)
    assert n_params == len(seen) and len(groups) < n_params


def test_apply_schedules_sets_lr_and_weight_decay_per_group():
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW([
        {"params": [layer.weight], "lr_multiplier": 0.5, "wd_multiplier": 1.0, "is_last_layer": False},
        {"params": [layer.bias], "lr_multiplier": 1.0, "wd_multiplier": 0.0, "is_last_layer": True},
    ])
    apply_schedules(optimizer, lr=1e-3, weight_decay=0.1, last_layer_lr=0.0)
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(5e-4, 0.1), (0.0, 0.0)]


def test_ema_update_moves_the_teacher_towards_the_student():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = copy.deepcopy(teacher)
    update_teacher(teacher, student, momentum=0.75)
    torch.testing.assert_close(teacher.weight, 0.75 * before.weight + 0.25 * student.weight)
    update_teacher(teacher, student, momentum=1.0)
    torch.testing.assert_close(teacher.weight, 0.75 * before.weight + 0.25 * student.weight)


def test_one_dinov2_step_runs_and_keeps_the_last_layer_frozen():
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny_patch16_224", img_size=64, drop_path_rate=0.1)
    student = torch.nn.ModuleDict({"backbone": backbone, "head": DINOHead(192, 16, hidden_dim=32, bottleneck_dim=8)})
    teacher = copy.deepcopy(student).requires_grad_(False)
    optimizer = torch.optim.AdamW(build_param_groups(backbone, [student["head"]]))
    schedules = build_schedules(epochs=2, iters_per_epoch=1, warmup_epochs=0, warmup_teacher_temp_epochs=1)
    dino_center, ibot_center = Center(16), Center(16)
    batch = 2
    global_crops, local_crops = torch.randn(2 * batch, 3, 64, 64), torch.randn(3 * batch, 3, 32, 32)
    masks = mask_global_crops(2 * batch, (4, 4), np.random.default_rng(0))
    values = schedules.at(0)  # lr 1e-3, last-layer lr 0 during the first epoch
    apply_schedules(optimizer, values["lr"], values["weight_decay"], values["last_layer_lr"])

    with torch.no_grad():
        t_out = teacher["backbone"](global_crops)
        t_cls = teacher["head"](t_out.cls).reshape(2, batch, -1)
        t_patch = teacher["head"](t_out.patches.flatten(0, 1)[masks.indices])
    s_global = student["backbone"](global_crops, masks.masks)
    s_local = student["backbone"](local_crops)
    s_cls = student["head"](s_global.cls).reshape(2, batch, -1)
    s_local_cls = student["head"](s_local.cls).reshape(3, batch, -1)
    s_patch = student["head"](s_global.patches.flatten(0, 1)[masks.indices])
    loss = (dino_loss(s_cls, dino_center.targets(t_cls, values["teacher_temp"]), s_local_cls)
            + ibot_loss(s_patch, ibot_center.targets(t_patch, values["teacher_temp"]), masks.masks)
            + 0.1 * koleo_loss(s_global.cls.reshape(2, batch, -1)))
    dino_center.update(t_cls)
    ibot_center.update(t_patch)
    last_before = [p.detach().clone() for p in student["head"].last_layer.parameters()]
    fc1_before = student["head"].mlp[0].weight.detach().clone()
    optimizer.zero_grad()
    loss.backward()
    assert math.isfinite(loss.item()) and backbone.mask_token.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in student["head"].last_layer.parameters())
    clip_grad_norm_per_submodule(student, 3.0)
    optimizer.step()
    update_teacher(teacher, student, values["momentum"])
    for param, before in zip(student["head"].last_layer.parameters(), last_before, strict=True):
        torch.testing.assert_close(param, before)  # lr 0: neither moved nor weight-decayed
    assert not torch.equal(student["head"].mlp[0].weight, fc1_before)
    assert dino_center.center.abs().sum() > 0 and ibot_center.center.abs().sum() > 0


def test_tensors_digest_names_the_weights_not_the_file(tmp_path):
    from safetensors.torch import load_file, save_file

    from magflow.pretrain.export import tensors_sha256

    weights = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.scale": torch.tensor(2.0),
               "c.empty": torch.zeros(0)}
    save_file(weights, tmp_path / "one.safetensors", metadata={"x": "1", "y": "2"})
    save_file(dict(reversed(weights.items())), tmp_path / "two.safetensors", metadata={"y": "2", "x": "1"})
    loaded = [load_file(tmp_path / name) for name in ("one.safetensors", "two.safetensors")]
    assert tensors_sha256(loaded[0]) == tensors_sha256(loaded[1]) == tensors_sha256(weights)
    changed = {**weights, "a.scale": torch.tensor(2.0 + 1e-6)}
    assert tensors_sha256(changed) != tensors_sha256(weights)
    renamed = {("z" if k == "a.scale" else k): v for k, v in weights.items()}
    assert tensors_sha256(renamed) != tensors_sha256(weights)
