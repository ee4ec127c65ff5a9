"""A run's control: the network the trainer starts from, rebuilt from the run's card and embedded like any model."""

import json

import pytest
import torch

from embed_fixtures import smooth_field, write_analytic_store
from magflow.embed import InitControl, control_name, control_of, embed_tileset, load_encoder, model_source
from magflow.errors import ConfigError
from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import SamplerConfig, build_sampler
from pretrain_fixtures import TINY, write_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One iteration of a tiny run (exported with its card), and the same config stopped before iteration 0."""
    root = tmp_path_factory.mktemp("control")
    stores = [write_store(root / "a.h5", "a", tiles=2, seed=1)]
    sampler = build_sampler(SamplerConfig("cu"))
    config = TrainConfig.from_dict({**TINY, "iterations": 1, "seed": 5})
    trained = train(config, stores, sampler, root / "run", progress=False, device="cpu")
    start = train(config, stores, sampler, root / "start", progress=False, device="cpu", stop_at=0)
    return root, trained, start


def test_the_control_has_the_trainers_initial_weights(runs):
    root, trained, start = runs
    assert start.iteration == 0 and trained.iteration == 1
    control = load_encoder(InitControl(str(root / "run")))
    weights = control.model.vit.state_dict()
    initial = start.teacher.backbone.vit.state_dict()  # the teacher starts as a copy of the student
    assert weights.keys() == initial.keys()
    assert all(torch.equal(weights[k], initial[k]) for k in initial)
    assert all(torch.equal(start.student.backbone.vit.state_dict()[k], initial[k]) for k in initial)
    teacher = load_encoder(root / "run").model.vit.state_dict()  # one step of training moved the teacher
    assert any(not torch.equal(weights[k], teacher[k]) for k in teacher)
    assert control.name == "run~init" and not control.training
    card = control.card
    assert card["control"]["of"] == "run" and card["seed"] == 5 and card["iterations"] == 0


def test_the_control_embeds_like_any_model(runs, tmp_path):
    root, _, _ = runs
    store = write_analytic_store(tmp_path / "s.h5", smooth_field, size_um=32, source_px=256)
    source = model_source(control_name("run"), {"init_control_of": str(root / "run")})
    assert source == InitControl(str(root / "run")) and control_of(control_name("run")) == "run"
    out = tmp_path / "emb.h5"
    embed_tileset([store], out, source, name=control_name("run"), device="cpu", progress=False)
    from magflow.embed import read_embeddings

    emb = read_embeddings(out)
    assert emb.attrs["model"] == "run~init" and emb.attrs["model_card"]["control"]["of"] == "run"
    assert all(emb.valid[t].all() and emb.features[t].any() for t in emb.mpps)


def test_a_control_needs_the_runs_model_card(tmp_path):
    with pytest.raises(ConfigError, match="model_card.json"):
        load_encoder(InitControl(str(tmp_path)))
    (tmp_path / "model_card.json").write_text(json.dumps({"architecture": {}}))
    with pytest.raises(ConfigError, match="training.config"):
        load_encoder(InitControl(str(tmp_path)))
