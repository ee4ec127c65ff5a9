"""Losses, targets, gradients, head and parameter groups against outputs of the original DINOv2 code (b8931f7).

The reference file lives in ``../shared/reference/`` next to the project (see its README); without it these
tests skip, unless MAGFLOW_REQUIRE_REFERENCE is set (as CI does), when they fail. DINOv2 builds
its global-crop teacher targets from the teacher's CLS logits with the two crops swapped, so its
``teacher_dino_probs[0]`` is crop 1's; magflow keeps crop order and pairs the crops inside ``dino_loss``.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from magflow.pretrain import Center, DINOHead, build_backbone, build_param_groups, ibot_loss, koleo_loss
from magflow.pretrain.dinov2 import StudentOutput, TeacherOutput, dinov2_losses
from magflow.pretrain.losses.koleo import nearest_neighbours

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dinov2_b8931f7_losses.npz"
STRATEGIES = {"centering": "centering", "sinkhorn_knopp": "sinkhorn"}  # DINOv2's name → magflow's
ATOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    if not REFERENCE.is_file():
        message = f"the DINOv2 reference outputs are missing: expected {REFERENCE.name} in ../shared/reference/"
        if os.environ.get("MAGFLOW_REQUIRE_REFERENCE"):
            pytest.fail(message)
        pytest.skip(message)
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


def _close(actual: torch.Tensor | float, expected: np.ndarray, what: str) -> None:
    actual = actual.detach().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64).reshape(actual.shape), rtol=0,
                               atol=ATOL, err_msg=what)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_three_steps_of_losses_targets_and_gradients_match_dinov2(ref, strategy):
    meta = json.loads(str(ref["meta"]))["sizes"]
    batch, weights = meta["B_images"], (meta["dino_loss_weight"], meta["ibot_loss_weight"], meta["koleo_loss_weight"])
    centers = nn.ModuleDict({"dino": Center(meta["K"], meta["center_momentum"]),
                             "ibot": Center(meta["K"], meta["center_momentum"])})
    for step in range(meta["n_steps"]):
        inputs = {key.rsplit("/", 1)[1]: value for key, value in ref.items() if key.startswith(f"inputs/step{step}/")}
        out = {key.rsplit("/", 1)[1]: value for key, value in ref.items()
               if key.startswith(f"f32/{strategy}/step{step}/")}

        def leaf(name: str) -> torch.Tensor:
            return torch.tensor(inputs[name], dtype=torch.float32, requires_grad=True)

        s_global, s_local = leaf("student_global_cls_logits"), leaf("student_local_cls_logits")
        s_patch, s_backbone = leaf("student_masked_patch_logits"), leaf("student_global_backbone_cls")
        student = StudentOutput(s_backbone, torch.cat([s_global, s_local]), s_patch)
        teacher = TeacherOutput(torch.tensor(inputs["teacher_cls_logits"], dtype=torch.float32),
                                torch.tensor(inputs["teacher_masked_patch_logits"], dtype=torch.float32))
        masks = torch.tensor(inputs["collated_masks"])
        if strategy == "centering":
            _close(centers["dino"].center, out["dino_center_used"], f"step {step} dino centre")
            _close(centers["ibot"].center, out["ibot_center_used"], f"step {step} ibot centre")
        terms = dinov2_losses(student, teacher, masks, batch, centers, float(inputs["teacher_temp"]),
                              STRATEGIES[strategy], meta["student_temp"])
        total = weights[0] * terms["dino"] + weights[1] * terms["ibot"] + weights[2] * terms["koleo"]
        total.backward()
        _close(terms["dino"], out["dino_global_crops_loss"] + out["dino_local_crops_loss"], f"step {step} dino")
        _close(terms["ibot"], out["ibot_loss"], f"step {step} ibot")
        _close(weights[2] * terms["koleo"], out["koleo_loss"], f"step {step} koleo")
        _close(total, out["total_loss"], f"step {step} total")
        for tensor, name in ((s_global, "global_cls_logits"), (s_local, "local_cls_logits"),
                             (s_patch, "masked_patch_logits"), (s_backbone, "global_backbone_cls")):
            _close(tensor.grad, out[f"grad_student_{name}"], f"step {step} gradient of {name}")
    if strategy == "centering":
        _close(centers["dino"].center, ref["f32/centering/final_dino_center"], "final dino centre")
        _close(centers["ibot"].center, ref["f32/centering/final_ibot_center"], "final ibot centre")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_teacher_targets_match_dinov2_with_its_crop_swap(ref, strategy):
    from magflow.pretrain.dinov2 import teacher_targets

    centers = {"dino": Center(256), "ibot": Center(256)}
    for step in range(3):
        temp = float(ref[f"inputs/step{step}/teacher_temp"])
        cls = torch.tensor(ref[f"inputs/step{step}/teacher_cls_logits"], dtype=torch.float32)
        patch = torch.tensor(ref[f"inputs/step{step}/teacher_masked_patch_logits"], dtype=torch.float32)
        dino = teacher_targets(cls, temp, STRATEGIES[strategy], centers["dino"]).unflatten(0, (2, -1))
        ibot = teacher_targets(patch, temp, STRATEGIES[strategy], centers["ibot"])
        _close(dino.flip(0), ref[f"f32/{strategy}/step{step}/teacher_dino_probs"], f"step {step} dino targets")
        _close(ibot, ref[f"f32/{strategy}/step{step}/teacher_ibot_probs"], f"step {step} ibot targets")


def test_ibot_divides_by_all_global_crops_like_dinov2(ref):
    for step in range(3):
        masks = torch.tensor(ref[f"inputs/step{step}/collated_masks"])
        per_image = masks.sum(dim=1)
        assert (per_image == 0).any() and (per_image > 0).any()  # some images unmasked: conventions differ
        weights = (1.0 / per_image.clamp(min=1)).unsqueeze(1).expand_as(masks)[masks]
        np.testing.assert_allclose(weights.numpy(), ref[f"inputs/step{step}/masks_weight"], rtol=1e-6)
        assert int(masks.sum()) == int(ref[f"inputs/step{step}/n_masked_patches"][0])
        student = torch.tensor(ref[f"inputs/step{step}/student_masked_patch_logits"], dtype=torch.float32)
        for strategy in STRATEGIES:
            targets = torch.tensor(ref[f"f32/{strategy}/step{step}/teacher_ibot_probs"])
            loss = ibot_loss(student, targets, masks)
            _close(loss, ref[f"f32/{strategy}/step{step}/ibot_raw"], f"step {step} {strategy} ibot")
            _close(loss, ref[f"f32/{strategy}/step{step}/ibot_raw_masks_weight_None"], f"step {step} {strategy}")


def test_ibot_on_masked_tokens_equals_dinov2_dense_forward(ref):
    masks = torch.tensor(ref["inputs/step0/collated_masks"])
    student = torch.tensor(ref["inputs/ibot_dense/student_patch_logits"])
    teacher = torch.tensor(ref["inputs/ibot_dense/teacher_patch_probs"])
    _close(ibot_loss(student[masks], teacher[masks], masks), ref["f32/ibot_dense/forward"], "dense iBOT")


def test_koleo_with_a_duplicated_row_matches_dinov2(ref):
    x = torch.tensor(ref["inputs/koleo_dup/x"])
    unit = torch.nn.functional.normalize(x, dim=-1, eps=1e-8)
    np.testing.assert_array_equal(nearest_neighbours(unit).numpy(), ref["f32/koleo_dup/nn_index"])
    _close(koleo_loss(x), ref["f32/koleo_dup/loss"], "float32 KoLeo")
    assert koleo_loss(x.double()).item() == pytest.approx(float(ref["f64/koleo_dup/loss"]), abs=1e-9)


def _dinov2_to_magflow_head(name: str) -> str:
    return {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
            "last_layer.weight_v": "last_layer.parametrizations.weight.original1"}.get(name, name)


def test_head_output_matches_dinov2(ref):
    meta = json.loads(str(ref["meta"]))["head"]
    head = DINOHead(meta["in_dim"], meta["out_dim"], meta["hidden_dim"], meta["bottleneck_dim"])
    prefix = "head/state_dict/"
    state = {_dinov2_to_magflow_head(key[len(prefix):]): torch.tensor(value)
             for key, value in ref.items() if key.startswith(prefix)}
    head.load_state_dict(state)
    assert head.last_layer.parametrizations.weight.original0.requires_grad
    with torch.no_grad():
        _close(head(torch.tensor(ref["head/input"])), ref["head/output"], "head output")


def _dinov2_to_magflow_param(submodel: str, name: str) -> str:
    if submodel == "dino_head":
        return "head0." + _dinov2_to_magflow_head(name)
    if name == "mask_token":
        return name
    return "vit." + ("reg_token" if name == "register_tokens" else name)


def test_param_groups_of_a_vit_small_match_dinov2(ref):
    torch.manual_seed(0)
    backbone = build_backbone("vit_small_patch16_224", init_values=1e-5)  # LayerScale, as DINOv2's ViT-S
    head = DINOHead(384, num_prototypes=256, hidden_dim=64, bottleneck_dim=32)
    groups = build_param_groups(backbone, [head], layer_decay=0.9, patch_embed_lr_mult=0.2)
    ours = {name: (group["lr_multiplier"], group["wd_multiplier"], group["is_last_layer"])
            for group in groups for name in group["param_names"]}
    names = [_dinov2_to_magflow_param(str(submodel), str(name))
             for submodel, name in zip(ref["param_groups/submodel"], ref["param_groups/name"])]
    assert len(names) == 183 and sorted(names) == sorted(ours)
    for name, lr, wd, last in zip(names, ref["param_groups/lr_multiplier"], ref["param_groups/wd_multiplier"],
                                  ref["param_groups/is_last_layer"]):
        assert ours[name][0] == pytest.approx(float(lr), rel=1e-12), name
        assert (ours[name][1], ours[name][2]) == (float(wd), bool(last)), name
