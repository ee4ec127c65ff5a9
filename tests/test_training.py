"""The training loops' shared plumbing: the non-finite check, precision, checkpoints and resume."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from magflow.errors import ConfigError
from magflow.training import (CHECKPOINT, NonFiniteLossError, autocast, check_finite, load_checkpoint,
                              resolve_precision, resume_state, save_checkpoint, stop_iteration, weight_decay_exempt)


def test_a_finite_loss_passes_and_a_non_finite_one_names_the_iteration_and_every_term(tmp_path):
    check_finite({"loss": 0.5, "mem": 1.0}, 3, tmp_path / CHECKPOINT, {"lr": 1e-3}, "lower base_lr")
    with pytest.raises(NonFiniteLossError, match=r"at iteration 7: loss=nan, mem=inf \(lr 0\.001\); the step was "
                                                  r"not applied and no checkpoint was written yet: lower base_lr"):
        check_finite({"loss": math.nan, "mem": math.inf}, 7, tmp_path / CHECKPOINT, {"lr": 1e-3}, "lower base_lr")
    save_checkpoint(tmp_path / CHECKPOINT, {"iteration": 7})
    with pytest.raises(NonFiniteLossError, match="holds the last checkpoint"):
        check_finite({"loss": -math.inf}, 8, tmp_path / CHECKPOINT, {}, "check the tiles")


def test_precision_auto_is_fp32_on_cpu_and_bf16_autocasts():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert isinstance(autocast("fp32", cpu), nullcontext)
    with autocast("bf16", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_checkpoint_round_trip_restores_model_optimizer_and_iteration(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    identity = {"config": {"lr": 1e-2, "betas": (0.9, 0.999)}, "seed": 0}
    path = tmp_path / CHECKPOINT
    assert resume_state(path, identity) is None and resume_state(None, identity) is None
    save_checkpoint(path, {"iteration": 5, "identity": identity, "model": model.state_dict(),
                           "optimizer": optimizer.state_dict()})
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # the temporary file is gone

    fresh = nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    state = resume_state(path, identity)  # the tuple stored as a list still matches
    assert state is not None and state["iteration"] == 5
    fresh.load_state_dict(state["model"])
    fresh_optimizer.load_state_dict(state["optimizer"])
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(optimizer.state[a]["exp_avg"], fresh_optimizer.state[b]["exp_avg"])
    assert load_checkpoint(path)["iteration"] == 5

    with pytest.raises(ConfigError, match=r"other settings \(differing: config\.lr\)"):
        resume_state(path, {**identity, "config": {**identity["config"], "lr": 1e-3}})


def test_weight_decay_exempts_biases_norms_tokens_and_tables():
    weight, bias = nn.Parameter(torch.zeros(4, 4)), nn.Parameter(torch.zeros(4))
    assert not weight_decay_exempt("blocks.0.attn.qkv.weight", weight)
    assert weight_decay_exempt("blocks.0.attn.qkv.bias", bias) and weight_decay_exempt("norm.weight", bias)
    for name in ("encoder.cls_token", "decoder.mask_token", "encoder.pos.pos_col", "scale_embed.weight"):
        assert weight_decay_exempt(name, weight), name


def test_stop_iteration():
    assert stop_iteration(0, 10, None) == 10 and stop_iteration(2, 10, 4) == 4
    assert stop_iteration(6, 10, 4) == 6 and stop_iteration(0, 10, 20) == 10
