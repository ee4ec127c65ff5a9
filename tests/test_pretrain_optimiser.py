"""DINOv2's optimiser rules on a ViT-S/14 with registers: weight decay by name, the last-layer freeze, clipping."""

import pytest
import torch

from magflow.pretrain import DINOHead, apply_schedules, build_backbone, build_param_groups, build_schedules
from magflow.pretrain.clipping import clip_grad_norm_per_submodule
from magflow.pretrain.dinov2 import DINOv2

MAGNITUDE = "head0.last_layer.parametrizations.weight.original0"


@pytest.fixture(scope="module")
def vit_small_reg():
    torch.manual_seed(0)
    return build_backbone("vit_small_patch14_reg4_dinov2", img_size=224, patch_size=14)


def _by_name(groups: list[dict]) -> dict[str, tuple[float, float, bool]]:
    return {name: (group["lr_multiplier"], group["wd_multiplier"], group["is_last_layer"])
            for group in groups for name in group["param_names"]}


def test_weight_decay_exempts_only_biases_norms_and_layer_scales(vit_small_reg):
    head = DINOHead(384, num_prototypes=32, hidden_dim=64, bottleneck_dim=16)
    seen = _by_name(build_param_groups(vit_small_reg, [head], layer_decay=0.9, patch_embed_lr_mult=0.2))
    for token in ("vit.cls_token", "vit.pos_embed", "vit.reg_token", "mask_token"):
        assert seen[token][:2] == (pytest.approx(0.9 ** 13), 1.0), token
    gammas = [name for name in seen if name.endswith((".ls1.gamma", ".ls2.gamma"))]
    norms = [name for name in seen if ".norm1." in name or ".norm2." in name or name.startswith("vit.norm.")]
    biases = [name for name in seen if name.endswith(".bias")]
    assert len(gammas) == 24 and len(norms) == 4 * 12 + 2 and len(biases) > 12 * 4
    for name in gammas + norms + biases:
        assert seen[name][1] == 0.0, name
    matrices = [name for name in seen if name.endswith(".weight") and name not in norms]
    assert "vit.patch_embed.proj.weight" in matrices and "vit.blocks.0.attn.qkv.weight" in matrices
    for name in matrices:
        assert seen[name][1] == 1.0, name
    assert seen[MAGNITUDE] == (1.0, 1.0, True)  # DINOv2's last_layer.weight_g: trainable, decayed, frozen early


def test_prototype_magnitude_trains_only_after_the_last_layer_freeze(vit_small_reg):
    torch.manual_seed(0)
    head = DINOHead(384, num_prototypes=32, hidden_dim=64, bottleneck_dim=16)
    groups = build_param_groups(vit_small_reg, [head])
    optimizer = torch.optim.AdamW(groups)
    freeze_iters = 3
    schedules = build_schedules(6, 1, lr=1e-3, warmup_epochs=0, freeze_last_layer_epochs=freeze_iters)
    magnitude = head.last_layer.parametrizations.weight.original0
    (group,) = [group for group in optimizer.param_groups if any(p is magnitude for p in group["params"])]
    features, direction = torch.randn(4, 384), torch.randn(4, 32)
    for iteration in range(freeze_iters + 2):
        values = schedules.at(iteration)
        apply_schedules(optimizer, values["lr"], values["weight_decay"], values["last_layer_lr"])
        before = magnitude.detach().clone()
        optimizer.zero_grad()
        (head(features) * direction).sum().backward()
        assert magnitude.grad is not None and magnitude.grad.abs().sum() > 0
        optimizer.step()
        if iteration < freeze_iters:
            assert group["lr"] == 0.0 and torch.equal(magnitude, before), iteration
        else:
            assert group["lr"] > 0.0 and not torch.equal(magnitude, before), iteration


def _tiny_dinov2(separate_ibot_head: bool) -> DINOv2:
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny_patch16_224", img_size=32)

    def head() -> DINOHead:
        return DINOHead(192, num_prototypes=16, hidden_dim=32, bottleneck_dim=8)

    return DINOv2(backbone, head(), head() if separate_ibot_head else None)


def _set_gradients(module: torch.nn.Module, norm: float) -> None:
    params = list(module.parameters())
    count = sum(p.numel() for p in params)
    for p in params:
        p.grad = torch.full_like(p, norm / count ** 0.5)


def _grad_norm(module: torch.nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()])).item()


def test_a_gradient_spike_in_a_head_does_not_scale_the_backbone():
    model = _tiny_dinov2(separate_ibot_head=True)
    _set_gradients(model.backbone, 1.0)
    _set_gradients(model.dino_head, 1000.0)
    _set_gradients(model.ibot_head, 5.0)
    backbone_before = [p.grad.clone() for p in model.backbone.parameters()]
    norms = clip_grad_norm_per_submodule(model, 3.0)
    assert {name: pytest.approx(norm.item(), rel=1e-3) for name, norm in norms.items()} == {
        "backbone": 1.0, "dino_head": 1000.0, "ibot_head": 5.0}
    for grad, before in zip((p.grad for p in model.backbone.parameters()), backbone_before, strict=True):
        assert torch.equal(grad, before)
    assert _grad_norm(model.dino_head) == pytest.approx(3.0, rel=1e-3)
    assert _grad_norm(model.ibot_head) == pytest.approx(3.0, rel=1e-3)


def test_each_submodule_is_clipped_to_the_full_threshold():
    model = _tiny_dinov2(separate_ibot_head=False)
    _set_gradients(model.backbone, 4.0)
    _set_gradients(model.dino_head, 6.0)
    norms = clip_grad_norm_per_submodule(model, 3.0)
    assert set(norms) == {"backbone", "dino_head"}  # a shared iBOT head is the DINO head
    assert _grad_norm(model.backbone) == pytest.approx(3.0, rel=1e-3)
    assert _grad_norm(model.dino_head) == pytest.approx(3.0, rel=1e-3)
