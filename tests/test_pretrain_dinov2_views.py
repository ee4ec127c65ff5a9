"""A tiny run with ``views: dinov2`` (DINOv2's random-resized crops of a source patch at the drawn mpp), end to end."""

import json
import math

import pytest
import torch

from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import SamplerConfig, build_sampler
from pretrain_fixtures import TINY, write_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_dinov2_views_run_trains_resumes_exactly_and_records_its_views(tmp_path):
    stores = [write_store(tmp_path / "a.h5", "a", tiles=2, seed=1),
              write_store(tmp_path / "b.h5", "b", tiles=1, seed=2)]
    config = TrainConfig.from_dict({**TINY, "views": "dinov2", "source_size": 64, "iterations": 4})
    sampler = build_sampler(SamplerConfig("cu"))

    def run(out, **kwargs):
        steps = []
        result = train(config, stores, sampler, tmp_path / out, progress=False, device="cpu", on_step=steps.append,
                       **kwargs)
        return result, steps

    straight, steps = run("straight")
    first, first_steps = run("resumed", stop_at=2)
    resumed, resumed_steps = run("resumed")
    assert first.iteration == 2 and resumed.iteration == 4 and len(steps) == 4
    assert [s.losses for s in first_steps + resumed_steps] == [s.losses for s in steps]
    assert all(math.isfinite(value) for step in steps for value in step.losses.values())
    a, b = straight.teacher.state_dict(), resumed.teacher.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    drawn = torch.cat([step.mpp for step in steps])
    assert len(drawn) == 4 * TINY["batch_size"] and torch.all((drawn >= 0.25) & (drawn <= 2.0))

    views = json.loads(straight.model_card.read_text())["training"]["views"]
    assert views["mode"] == "dinov2" and views["source_size"] == 64
    assert views["global_crops_scale"] == [0.35, 1.0] and views["local_crops_scale"] == [0.05, 0.35]
