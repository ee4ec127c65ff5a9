"""Mixer pretraining: config checks, optimiser groups, exact resume, the run identity check, export."""

import json

import pytest
import torch

from magflow.aggregate.encode import encode_regions
from magflow.aggregate.pretrain_mixer import (CARD, MixerTrainConfig, build_objective, load_mixer, param_groups,
                                              train_mixer)
from magflow.aggregate.regions import SlideRegions
from magflow.aggregate.synthetic import write_synthetic_regions
from magflow.errors import ConfigError

TINY = {"objective": "cmem", "width": 16, "depth": 1, "heads": 2, "decoder_depth": 1, "projector_hidden": 32,
        "projector_dim": 8, "context": 5, "batch_size": 4, "iterations": 6, "warmup_iters": 2, "base_lr": 1e-3,
        "checkpoint_every": 3}


@pytest.fixture(scope="module")
def region_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixer")
    files = [root / f"r{i}.h5" for i in range(2)]
    for i, path in enumerate(files):
        write_synthetic_regions(path, f"s{i}", seed=i, dim=8)
    return files


def test_config_refuses_unknown_keys_and_scales_lr():
    with pytest.raises(ConfigError, match="unknown aggregate.pretrain key"):
        MixerTrainConfig.from_dict({"widht": 8})
    with pytest.raises(ConfigError, match="mask_ratio"):
        MixerTrainConfig(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="objective"):
        MixerTrainConfig(objective="mae")
    config = MixerTrainConfig.from_dict({"base_lr": 1e-4, "batch_size": 512, "betas": [0.9, 0.95]})
    assert config.lr == pytest.approx(2e-4) and config.betas == (0.9, 0.95)


def test_weight_decay_skips_norms_biases_positions_and_tokens():
    model = build_objective(MixerTrainConfig.from_dict(TINY), 8, 3)
    decay, no_decay = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"mem.encoder.cls_token", "mem.encoder.pos.pos_col", "mem.encoder.pos.scale_embed",
            "mem.decoder.mask_token", "mem.encoder.norm.weight", "mem.encoder.patch_embed.bias"} <= skipped
    assert all(p.ndim == 2 for p in decay["params"]) and no_decay["wd_multiplier"] == 0.0
    assert "mem.encoder.blocks.0.attn.qkv.weight" in {names[id(p)] for p in decay["params"]}


def test_resume_equals_an_uninterrupted_run(region_files, tmp_path, one_torch_thread):
    config = MixerTrainConfig.from_dict(TINY)
    whole = train_mixer(config, region_files, tmp_path / "whole", progress=False, device="cpu")
    part = train_mixer(config, region_files, tmp_path / "split", progress=False, device="cpu", stop_at=3)
    assert part.iteration == 3 and part.weights is None
    resumed = train_mixer(config, region_files, tmp_path / "split", progress=False, device="cpu")
    assert resumed.iteration == 6
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]

    encoder = load_mixer(tmp_path / "split")
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, whole.model.encoder.state_dict()[name])
    regions = SlideRegions(region_files[0])
    features = encode_regions(encoder, regions, batch_size=4)
    assert features.shape == (len(regions), 4 * 16)
    torch.testing.assert_close(torch.from_numpy(encode_regions(encoder, regions, batch_size=1)),
                               torch.from_numpy(features), rtol=1e-5, atol=1e-5)
    card = json.loads((tmp_path / "split" / CARD).read_text())
    assert card["mixer"]["in_dim"] == 8 and card["regions"]["tokens"] == 189 and card["objective"] == "cmem"
    assert card["pretraining_loss"] == "CMEM (paper-eq5)" and card["training"]["contrastive_loss"] == "paper-eq5"

    with pytest.raises(ConfigError, match="mask_ratio"):
        train_mixer(MixerTrainConfig.from_dict({**TINY, "mask_ratio": 0.25, "iterations": 9}), region_files,
                    tmp_path / "split", progress=False, device="cpu")
