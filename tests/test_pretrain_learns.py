"""A short CPU run does not collapse: the DINO loss stays below ln K (the uniform-collapse value) and the teacher's
targets are not uniform.

At the start the teacher equals the student, so a low loss there says nothing; whether a run learns (kNN and
RankMe per mpp against the same network at initialisation) is measured by ``benchmarks/learning.py``.
"""

import math

import pytest
import torch

from magflow.pretrain.strategy import SamplingStrategy
from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import SamplerConfig, build_sampler
from magflow.training import CHECKPOINT, load_checkpoint
from pretrain_fixtures import TINY, write_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = {**TINY, "arch_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2}, "views": "dinov2", "source_size": 72,
         "prototypes": 256, "head_hidden_dim": 128, "head_bottleneck_dim": 64, "batch_size": 16, "iterations": 60,
         "base_lr": 0.004, "lr_scaling": "sqrt", "warmup_iters": 6, "freeze_last_layer_iters": 6, "momentum": 0.99,
         "teacher_temp": 0.02, "warmup_teacher_temp": 0.02, "teacher_temp_warmup_iters": 0}


def test_a_short_run_leaves_the_uniform_solution(tmp_path):
    stores = [write_store(tmp_path / f"{i}.h5", f"s{i}", tiles=8, source_px=144, cell_px=72, seed=i) for i in range(3)]
    config = TrainConfig.from_dict(SHORT)
    dino: list[float] = []
    result = train(config, stores, build_sampler(SamplerConfig("cu")), tmp_path / "run", progress=False,
                   device="cpu", on_step=lambda step: dino.append(step.losses["dino"]))
    ln_k = math.log(config.prototypes)
    end = sum(dino[-10:]) / 10
    assert end < 0.95 * ln_k, f"DINO loss ends at {end / ln_k:.3f} ln K: the head collapsed to uniform targets"

    # the teacher's targets on held-out draws of the train tiles are not uniform
    views = SamplingStrategy(config, stores, build_sampler(SamplerConfig("cu")))
    globals_ = views.prepare(views.batches(32, 999, 0, 1)[0], 0, 0, torch.device("cpu")).global_crops
    center = load_checkpoint(tmp_path / "run" / CHECKPOINT)["centers"]["dino.center"]
    with torch.no_grad():
        logits = result.teacher.dino_head(result.teacher.backbone(globals_).cls)
    targets = torch.softmax((logits - center) / config.teacher_temp, dim=-1)
    entropy = float(-(targets * targets.clamp_min(1e-30).log()).sum(-1).mean())
    assert entropy < 0.95 * ln_k, f"teacher targets have entropy {entropy / ln_k:.3f} ln K: nearly uniform"

