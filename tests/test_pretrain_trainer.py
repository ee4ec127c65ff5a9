"""The training engine on a tiny ViT: exact resume, learning, TensorBoard, export, failure on a non-finite loss."""

import json

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from magflow.errors import ConfigError
from magflow.pretrain import dinov2
from magflow.pretrain.export import load_teacher
from magflow.pretrain.worker import main
from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import SamplerConfig, build_sampler, write_sampler
from magflow.training import CHECKPOINT, NonFiniteLossError, load_checkpoint
from pretrain_fixtures import TINY, write_store


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return [write_store(root / "a.h5", "a", tiles=2, seed=1), write_store(root / "b.h5", "b", tiles=1, seed=2)]


@pytest.fixture(scope="module")
def cu():
    return build_sampler(SamplerConfig("cu"))


def tiny(**overrides) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **overrides})


def run(config, stores, sampler, out_dir, **kwargs):
    losses = []
    result = train(config, stores, sampler, out_dir, progress=False, device="cpu",
                   on_step=lambda step: losses.append(step.losses), **kwargs)
    return result, losses


def scalars(out_dir, tag):
    return EventAccumulator(str(out_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload().Scalars(tag)


def test_a_resumed_run_equals_an_uninterrupted_one(stores, cu, tmp_path):
    config = tiny(iterations=6, drop_path=0.2)  # drop path: the global generator is replayed too
    straight, straight_losses = run(config, stores, cu, tmp_path / "straight")
    first, first_losses = run(config, stores, cu, tmp_path / "resumed", stop_at=3)
    assert first.iteration == 3 and first.weights is None
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["iteration"] == 3
    resumed, resumed_losses = run(config, stores, cu, tmp_path / "resumed")
    assert resumed.iteration == 6 and resumed.weights is not None
    assert first_losses + resumed_losses == straight_losses and len(straight_losses) == 6
    for name, models in (("student", (straight.student, resumed.student)),
                         ("teacher", (straight.teacher, resumed.teacher))):
        a, b = (m.state_dict() for m in models)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (load_checkpoint(tmp_path / d / CHECKPOINT) for d in ("straight", "resumed"))
    assert all(torch.equal(a["centers"][k], b["centers"][k]) for k in a["centers"])
    assert all(torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
               for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()))
    assert not torch.equal(straight.student.backbone.vit.pos_embed, straight.teacher.backbone.vit.pos_embed)
    logged = [{e.step: e.value for e in scalars(tmp_path / d, "loss/total")} for d in ("straight", "resumed")]
    assert list(logged[0]) == [1, 3, 5] and all(logged[1][step] == value for step, value in logged[0].items())

    with pytest.raises(ConfigError, match=r"differing: config\.batch_size"):
        run(tiny(iterations=6, drop_path=0.2, batch_size=2), stores, cu, tmp_path / "resumed")


@pytest.fixture(scope="module")
def learned(stores, tmp_path_factory):
    """A 40-iteration run with Sinkhorn-Knopp targets (whose loss falls from the start, unlike centering's)."""
    out = tmp_path_factory.mktemp("learned")
    torch.set_num_threads(1)
    result, losses = run(tiny(iterations=40, target_strategy="sinkhorn", log_every=10), stores,
                         build_sampler(SamplerConfig("cu_maxavg", kernel="area", lam=0.1)), out)
    return out, result, losses


def test_a_tiny_run_learns(learned, stores, tmp_path):
    _, _, losses = learned
    total = np.array([step["total"] for step in losses])
    assert np.isfinite(total).all() and total[-5:].mean() < 0.8 * total[:5].mean()
    dino = np.array([step["dino"] for step in losses])
    assert dino[-5:].mean() < 0.8 * dino[:5].mean()
    # the fall is learning, not the schedules: the same run with lr 0 stays where it started
    _, frozen = run(tiny(iterations=40, target_strategy="sinkhorn", log_every=10, base_lr=0.0), stores,
                    build_sampler(SamplerConfig("cu_maxavg", kernel="area", lam=0.1)), tmp_path)
    frozen_total = np.array([step["total"] for step in frozen])
    assert frozen_total[-5:].mean() > 0.95 * frozen_total[:5].mean()
    assert total[-5:].mean() < 0.8 * frozen_total[-5:].mean()


def test_tensorboard_has_every_scalar_and_the_mpp_histogram(learned):
    out, _, _ = learned
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/dino", "loss/ibot", "loss/koleo", "loss/total", "schedule/lr", "schedule/weight_decay",
            "schedule/momentum", "schedule/teacher_temp", "schedule/last_layer_lr",
            "throughput/images_per_s"} <= scalars
    assert [e.step for e in events.Scalars("loss/total")] == [9, 19, 29, 39]
    histograms = events.Histograms("mpp/items")
    assert len(histograms) == 4 and histograms[0].histogram_value.num == 10 * 4  # log_every · batch
    assert 0.25 <= histograms[-1].histogram_value.min and histograms[-1].histogram_value.max <= 2.0


def test_the_exported_teacher_reloads_with_identical_outputs_and_a_model_card(learned, stores):
    out, result, _ = learned
    loaded = load_teacher(out)
    teacher = result.teacher.backbone.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = teacher(images), loaded(images)
    assert torch.equal(expected.cls, got.cls) and torch.equal(expected.patches, got.patches)
    card = json.loads((out / "model_card.json").read_text())
    assert {"architecture", "strategy", "sampler", "data", "iterations", "seed", "commit", "precision",
            "weights", "provenance"} <= set(card)
    arch = card["architecture"]
    assert (arch["timm_name"], arch["embed_dim"], arch["depth"], arch["patch_size"], arch["reg_tokens"]) == \
        ("vit_small_patch16_224", 32, 2, 16, 0)
    assert card["strategy"] == "cu_maxavg" and card["sampler"]["kernel"] == "area"
    assert card["iterations"] == 40 and card["seed"] == 0 and card["precision"] == "fp32"
    assert card["data"]["tiles"] == 12 and [s["tiles"] for s in card["data"]["stores"]] == [
        {"0.25": 2, "0.5": 2, "1": 2, "2": 2}, {"0.25": 1, "0.5": 1, "1": 1, "2": 1}]
    assert "commit" in card["commit"] and card["training"]["global_batch"] == 4
    assert card["training"]["peak_lr"] == pytest.approx(0.5 * 4 / 1024)


def test_a_non_finite_loss_stops_the_run_naming_the_iteration_and_every_term(stores, cu, tmp_path, monkeypatch):
    calls = []

    def koleo_nan_at_third_call(features):
        calls.append(1)
        value = koleo(features)
        return value * float("nan") if len(calls) == 3 else value

    koleo = dinov2.koleo_loss
    monkeypatch.setattr(dinov2, "koleo_loss", koleo_nan_at_third_call)
    with pytest.raises(NonFiniteLossError, match=r"iteration 2: dino=[-\d.]+, ibot=[-\d.]+, koleo=nan, total=nan"):
        run(tiny(iterations=5, checkpoint_every=1), stores, cu, tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["iteration"] == 2  # the bad step was never applied


def test_the_run_entry_point_reads_a_config_and_refuses_unknown_keys(stores, cu, tmp_path, capsys):
    write_sampler(cu, tmp_path / "cu.json")
    config = {"stores": [str(s) for s in stores], "sampler": str(tmp_path / "cu.json"),
              "out_dir": str(tmp_path / "out"), "train": {**TINY, "iterations": 2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "run.yaml"), "--no-progress", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"].endswith("teacher_backbone.safetensors")
    assert (tmp_path / "out" / "model_card.json").is_file()
    config["train"]["learning_rate"] = 1.0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "bad.yaml"), "--no-progress", "--device", "cpu"]) == 2
    with pytest.raises(ConfigError, match="train.global_size: must be a multiple of patch_size"):
        tiny(global_size=60)
