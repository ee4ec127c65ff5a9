"""Encoders: a run's exported teacher and external timm models with local weights (never downloaded)."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from embed_fixtures import TINY_VIT, export_tiny_vit
from magflow.embed.encoder import load_encoder
from magflow.embed.external import ExternalModel, external_models, model_source
from magflow.errors import ConfigError
from magflow.pretrain.augment import normalize


def reference_tokens(vit, views):
    with torch.no_grad():
        return vit.forward_features(normalize(views))


def test_a_run_directory_loads_and_embeds_cls_and_mean_patch(tmp_path):
    model_dir = export_tiny_vit(tmp_path / "run")
    views = torch.rand(3, 3, 32, 32)
    encoder = load_encoder(model_dir)
    assert not encoder.training and encoder.embed_dim == 32 and encoder.feature_dim == 32
    assert encoder.name == "run" and encoder.card["architecture"]["timm_name"] == "vit_small_patch16_224"
    tokens = reference_tokens(encoder.model.vit, views)
    with torch.no_grad():
        assert torch.allclose(encoder(views), tokens[:, 0], atol=1e-5)
        both = load_encoder(model_dir, mean_patch=True)(views)
    assert both.shape == (3, 64)
    assert torch.allclose(both[:, 32:], tokens[:, 1:].mean(dim=1), atol=1e-5)
    # other view sizes work too (dynamic image size), e.g. the eval set's 224 px
    with torch.no_grad():
        assert encoder(torch.rand(2, 3, 48, 48)).shape == (2, 32)


def test_a_flat_model_card_is_accepted(tmp_path):
    model_dir = export_tiny_vit(tmp_path / "run")
    card = {"architecture": "vit_small_patch16_224", "img_size": 32, "patch_size": 8, "reg_tokens": 0,
            "embed_dim": 32, "timm_kwargs": TINY_VIT}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    assert load_encoder(model_dir).embed_dim == 32


def test_an_external_timm_model_with_local_weights(tmp_path):
    kwargs = {**TINY_VIT, "patch_size": 8, "reg_tokens": 2}
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, **kwargs)
    weights = tmp_path / "baseline.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    spec = ExternalModel.from_config("baseline", {"timm_name": "vit_small_patch16_224", "weights": str(weights),
                                                  "img_size": 32, "timm_kwargs": kwargs})
    encoder = load_encoder(spec, mean_patch=True)
    views = torch.rand(2, 3, 32, 32)
    tokens = reference_tokens(vit.eval(), views)
    with torch.no_grad():
        out = encoder(views)
    assert encoder.name == "baseline" and encoder.card["external"] is True
    assert torch.allclose(out[:, :32], tokens[:, 0], atol=1e-5)
    assert torch.allclose(out[:, 32:], tokens[:, 3:].mean(dim=1), atol=1e-5)  # 1 CLS + 2 registers left out


def test_external_models_without_local_weights_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="never downloads"):
        load_encoder(ExternalModel("uni", "vit_large_patch16_224"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder(ExternalModel("uni", "vit_large_patch16_224", weights=str(tmp_path / "missing.bin")))
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="weights come from its folder"):
        load_encoder(ExternalModel("v", "hf-hub:some-org/some-model", weights=str(tmp_path / "w.bin")))
    with pytest.raises(ConfigError, match="timm_name"):
        ExternalModel.from_config("x", {"weights": "w.bin"})
    with pytest.raises(ConfigError, match=r"embed.external.x: unknown key\(s\) \['colour'\]"):
        ExternalModel.from_config("x", {"timm_name": "vit_small_patch16_224", "colour": "red"})
    with pytest.raises(ConfigError, match="needs teacher_backbone.safetensors"):
        load_encoder(tmp_path)
    with pytest.raises(ConfigError, match="embed.external.uni.weights: must name a local weights file"):
        external_models({"uni": {"timm_name": "vit_large_patch16_224"}})
    assert model_source("run", "results/models/run") == "results/models/run"
    weights = str(tmp_path / "w.bin")
    assert model_source("uni", {"timm_name": "vit_large_patch16_224", "weights": weights}).weights == weights
    with pytest.raises(ConfigError, match=r"embed.external.uni.weights: weights file .*w2.bin does not exist"):
        model_source("uni", {"timm_name": "vit_large_patch16_224", "weights": str(tmp_path / "w2.bin")})


def test_weights_of_another_architecture_are_refused(tmp_path):
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            **TINY_VIT)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    spec = ExternalModel("x", "vit_small_patch16_224", str(weights), img_size=32,
                         timm_kwargs={**TINY_VIT, "depth": 2, "patch_size": 8})
    with pytest.raises(ConfigError, match="do not fit"):
        load_encoder(spec)
