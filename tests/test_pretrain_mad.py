"""MAD as a pretraining strategy: aligned children, seeded item frequencies, the teacher's inputs, a tiny run."""

import json

import numpy as np
import pytest
import torch
import yaml

from magflow.errors import ConfigError
from magflow.preprocess.store import TileStore
from magflow.pretrain import augment, mad_views
from magflow.pretrain.dinov2 import DINOv2
from magflow.pretrain.mad_config import MadConfig
from magflow.pretrain.mad_data import MadBatches, MadSource
from magflow.pretrain.mad_views import make_mad_views
from magflow.pretrain.worker import main
from magflow.pretrain.trainer import TrainConfig, train
from magflow.pretrain.views import ViewConfig
from mad_fixtures import CELL_PX, FEW_CHILDREN_PARENT, FEW_GRANDCHILDREN_CELL, PARTIAL_PARENT, write_mad_store

# A 2-block ViT with 4 register tokens on 32 px globals (8 px patches): the MAD children are whole 32 px cells.
TINY_MAD = {
    "arch_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "patch_size": 8, "reg_tokens": 4,
    "global_size": 32, "local_size": 16, "n_local_crops": 2, "prototypes": 64, "head_hidden_dim": 64,
    "head_bottleneck_dim": 16, "batch_size": 4, "warmup_iters": 0, "teacher_temp_warmup_iters": 2,
    "freeze_last_layer_iters": 1, "base_lr": 0.5, "momentum": 0.9, "num_workers": 0, "checkpoint_every": 1000,
    "log_every": 10, "target_strategy": "sinkhorn",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_mad_store(tmp_path_factory.mktemp("mad"))


@pytest.fixture
def no_augmentation(monkeypatch):
    """MAD's own augmentations become plain normalisation, so views can be compared with the stored pixels."""
    monkeypatch.setattr(mad_views, "augment_views",
                        lambda views, generator, blur, solarize, dihedral=True: augment.normalize(views))


def pixels(normalised: torch.Tensor) -> np.ndarray:
    """N×3×H×W normalised views → N×H×W×3 float grey levels."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (augment.IMAGENET_MEAN, augment.IMAGENET_STD))
    return ((normalised * std + mean) * 255).permute(0, 2, 3, 1).double().numpy()


def area(image: np.ndarray, factor: int) -> np.ndarray:
    side = image.shape[0] // factor
    return image.reshape(side, factor, side, factor, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("size", [CELL_PX, CELL_PX // 2])
def test_children_views_are_the_aligned_sub_squares_of_their_parent(store, no_augmentation, size):
    """Each child view, area-resampled by the scale factor, equals its own sub-square of the parent view; the
    child's grid cell (read from the store, not from MAD's code) lies in the parent's cell at position k."""
    source = MadSource([store], MadConfig(standalone_p=0.0))
    batch = source.draw(24, np.random.default_rng(1))
    views = make_mad_views(batch, CELL_PX, ViewConfig(size, size // 2, 2), torch.Generator().manual_seed(0))
    n_items = views.n_transition
    assert n_items == 24 and views.children.shape == (4 * n_items, 3, size, size)
    parent_views = pixels(views.global_crops)
    children = pixels(views.children).reshape(4, n_items, size, size, 3)
    transitions = set()
    with TileStore(store) as tiles:
        for i in range(n_items):
            transition = source.transitions[int(batch["transition"][i])]
            transitions.add(transition.name)
            factor = round(transition.coarse / transition.fine)
            parent_grid = tiles.group(transition.coarse)["grid"][int(batch["parent_row"][i])]
            parent = parent_views[i]
            assert np.allclose(parent, parent_views[n_items + i], atol=1e-3)  # both teacher views: one context tile
            if size == CELL_PX:
                stored = tiles.group(transition.coarse)["images"][int(batch["parent_row"][i])]
                assert np.abs(parent - stored).max() < 1e-3
            sub = size // factor
            for j in range(4):
                child_grid = tiles.group(transition.fine)["grid"][int(batch["child_rows"][i, j])]
                assert (child_grid // factor == parent_grid).all()
                a, b = child_grid % factor
                assert b * factor + a == int(batch["child_k"][i, j])
                small = area(children[j, i], factor)
                errors = np.array([np.abs(small - parent[y * sub:(y + 1) * sub, x * sub:(x + 1) * sub]).mean()
                                   for y in range(factor) for x in range(factor)])  # against every sub-square
                k = int(b * factor + a)
                others = np.delete(errors, k)
                # native cells: a box average matches to JPEG noise; both resized to 16 px: two different filters
                tolerance = 2.5 if size == CELL_PX else 10.0
                assert errors[k] < tolerance and others.min() > errors[k] + 5, (transition.name, i, j, errors)
    assert transitions == {"4>1", "1>0.25"}


def test_transition_and_standalone_frequencies_follow_the_config(store):
    config = MadConfig(transition_weights=(1.0, 3.0), standalone_p=0.3)
    source = MadSource([store], config)
    summary = source.summary()["transitions"]
    assert summary["4>1"]["skipped_parents"] == 1 and summary["1>0.25"]["skipped_parents"] == 1
    batches = MadBatches(source, batch_size=8, seed=3, rank=0, iterations=300)
    standalone, first_transition, scales, items = 0, 0, [], 0
    drawn_k: dict[tuple[int, int], set[int]] = {}
    with TileStore(store) as tiles:
        lookup_4, grid_4 = tiles.lookup(4.0), tiles.group(4.0)["grid"][...]
        grid_1 = tiles.group(1.0)["grid"][...]
        for iteration in range(len(batches)):
            batch = batches[iteration]
            n_transition = len(batch["transition"])
            items += n_transition + len(batch["standalone_row"])
            standalone += len(batch["standalone_row"])
            first_transition += int((batch["transition"] == 0).sum())
            scales += [round(m, 3) for m in batch["standalone_mpp"].tolist()]
            for i in range(n_transition):
                rows, ks = batch["child_rows"][i], batch["child_k"][i]
                assert (rows >= 0).all() and len(set(ks.tolist())) == 4  # 4 distinct present children
                coarse = 4.0 if int(batch["transition"][i]) == 0 else 1.0
                cell = tuple((grid_4 if coarse == 4.0 else grid_1)[int(batch["parent_row"][i])])
                assert cell != (FEW_CHILDREN_PARENT if coarse == 4.0 else FEW_GRANDCHILDREN_CELL)
                if coarse == 4.0:
                    drawn_k.setdefault(cell, set()).update(ks.tolist())
    assert items == 2400
    bound = lambda n, p: 4.5 * np.sqrt(n * p * (1 - p))  # noqa: E731 - binomial, ~1 in 150,000 false alarm
    assert abs(standalone - 0.3 * items) < bound(items, 0.3)
    transitions = items - standalone
    assert abs(first_transition - 0.25 * transitions) < bound(transitions, 0.25)
    for mpp in (4.0, 1.0, 0.25):  # standalone scales: uniform
        assert abs(scales.count(mpp) - standalone / 3) < bound(standalone, 1 / 3)
    assert lookup_4[PARTIAL_PARENT[1], PARTIAL_PARENT[0]] >= 0
    assert drawn_k[PARTIAL_PARENT] == set(range(10))  # the 6 background children replaced by the present ones
    assert len(drawn_k) == 15 and all(k == set(range(16)) for c, k in drawn_k.items() if c != PARTIAL_PARENT)
    # a pure function of (seed, rank, iteration)
    again = MadBatches(MadSource([store], config), batch_size=8, seed=3, rank=0, iterations=300)[7]
    other_rank = MadBatches(source, batch_size=8, seed=3, rank=1, iterations=300)[7]
    assert all(torch.equal(again[k], batches[7][k]) for k in again if isinstance(again[k], torch.Tensor))
    assert not torch.equal(other_rank["store"], batches[7]["store"]) or \
        not torch.equal(other_rank["child_rows"], batches[7]["child_rows"])


def test_the_teacher_sees_only_the_context_tiles(store, no_augmentation, monkeypatch, tmp_path):
    """In a real training run, every teacher input row of a transition item is its low-magnification parent
    tile; the children reach the student only."""
    seen, student_seen = [], []
    teacher_pass, student_pass = DINOv2.teacher, DINOv2.forward
    monkeypatch.setattr(DINOv2, "teacher", lambda self, crops, indices=None: (
        seen.append(crops.detach().clone()), teacher_pass(self, crops, indices))[1])
    monkeypatch.setattr(DINOv2, "forward", lambda self, crops, local, masks=None, indices=None: (
        student_seen.append([g.detach().clone() for g in local or []]), student_pass(self, crops, local, masks,
                                                                                     indices))[1])
    steps = []
    config = TrainConfig.from_dict({**TINY_MAD, "iterations": 3, "batch_size": 6})
    train(config, [store], MadConfig(standalone_p=0.5), tmp_path, progress=False, device="cpu",
          on_step=steps.append)
    assert len(seen) == len(steps) == 3
    kinds = set()
    for crops, student_locals, step in zip(seen, student_seen, steps):
        batch, n = step.batch, len(step.batch["transition"])
        kinds |= {"transition"} if n else set()
        kinds |= {"standalone"} if n < 6 else set()
        parents = batch["parents"].permute(0, 2, 3, 1).double().numpy()
        children = batch["children"].transpose(0, 1).flatten(0, 1).permute(0, 2, 3, 1).double().numpy()
        teacher = pixels(crops)
        assert crops.shape[0] == 2 * 6
        for view in range(2):
            assert np.abs(teacher[view * 6:view * 6 + n] - parents).max() < 1e-3
        for child in children:  # no teacher row is a child tile
            assert np.abs(teacher - child).reshape(len(teacher), -1).mean(axis=1).min() > 5
        if n:
            assert np.abs(pixels(student_locals[0]) - children).max() < 1e-3  # the student got them, natively
        if n < 6:
            assert student_locals[-1].shape[-1] == TINY_MAD["local_size"]  # standalone items: DINOv2 local crops
        assert torch.allclose(step.mpp[:n], batch["fine_mpp"]) and torch.allclose(step.mpp[n:], batch["standalone_mpp"])
    assert kinds == {"transition", "standalone"}


def test_a_tiny_cpu_mad_run_learns_with_a_registers_backbone(store, tmp_path):
    def run(out, **overrides):
        losses = []
        result = train(TrainConfig.from_dict({**TINY_MAD, "iterations": 40, **overrides}), [store],
                       MadConfig(standalone_p=0.25), out, progress=False, device="cpu",
                       on_step=lambda step: losses.append(step.losses))
        return result, losses

    result, losses = run(tmp_path)
    total, dino = (np.array([step[k] for step in losses]) for k in ("total", "dino"))
    assert np.isfinite(total).all() and total[-5:].mean() < 0.8 * total[:5].mean()
    assert dino[-5:].mean() < 0.8 * dino[:5].mean()
    # the fall is learning, not the schedules: with lr 0 the loss stays where it started
    frozen = np.array([step["total"] for step in run(tmp_path / "frozen", base_lr=0.0)[1]])
    assert frozen[-5:].mean() > 0.95 * frozen[:5].mean() and total[-5:].mean() < 0.8 * frozen[-5:].mean()
    assert all(step["ibot"] == 0.0 for step in losses)  # the paper's default: DINO cross-entropy only
    assert result.student.backbone.vit.num_reg_tokens == 4
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["strategy"] == "mad" and "sampler" not in card and card["architecture"]["reg_tokens"] == 4
    assert card["mad"]["transition_weights"] == [0.5, 0.5] and card["mad"]["ibot"] is False
    assert card["data"]["transitions"] == {"4>1": {"parents": 15, "skipped_parents": 1},
                                           "1>0.25": {"parents": 236, "skipped_parents": 1}}
    assert card["training"]["views"]["children"] == 4 and card["training"]["ibot"] is False


def test_the_run_entry_point_trains_mad_and_refuses_bad_settings(store, tmp_path, capsys):
    config = {"stores": [str(store)], "mad": {"standalone_p": 0.0}, "out_dir": str(tmp_path / "out"),
              "train": {**TINY_MAD, "iterations": 1, "batch_size": 2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "run.yaml"), "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "out" / "model_card.json").read_text())["strategy"] == "mad"
    with pytest.raises(ConfigError, match="unknown pretrain.mad key"):
        MadConfig.from_dict({"standalone": 0.1})
    with pytest.raises(ConfigError, match=r"transition_weights: 3 weight\(s\) for the 2 transition"):
        MadSource([store], MadConfig(transition_weights=(1, 1, 1)))
    with pytest.raises(ConfigError, match="global_size .* <= the MAD tile set's cell_px"):
        train(TrainConfig.from_dict({**TINY_MAD, "global_size": 64}), [store], MadConfig(), tmp_path / "big",
              progress=False, device="cpu")
    config["sampler"] = {"strategy": "cu"}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "both.yaml"), "--no-progress", "--device", "cpu"]) == 2


def test_the_dinov2_same_data_baseline_trains_dinov2_on_standalone_tiles_of_the_mad_set(store, tmp_path):
    from magflow.pretrain.runs import is_mad, mad_settings

    row = {"kernel": "NA", "strategy": "dinov2_mad", "lam": "NA", "mpp": "NA", "seed": 0}
    assert is_mad(row) and not is_mad({**row, "strategy": "du"})
    settings = mad_settings(row, {"standalone_p": 0.1, "children": 4})  # pretrain.mad as a user wrote it
    mad = MadConfig.from_dict(settings)
    assert (mad.strategy, mad.standalone_p, mad.ibot, mad.children) == ("dinov2_mad", 1.0, True, 4)
    assert MadConfig.for_strategy("mad", {"standalone_p": 0.1}).standalone_p == 0.1
    with pytest.raises(ConfigError, match="standalone_p: is 1.0 for strategy dinov2_mad"):
        MadConfig(strategy="dinov2_mad", ibot=True)  # the baseline cannot keep MAD's transitions
    steps = []
    config = TrainConfig.from_dict({**TINY_MAD, "iterations": 3, "batch_size": 4})
    train(config, [store], mad, tmp_path, progress=False, device="cpu", on_step=steps.append)
    for step in steps:  # DINOv2 itself: no transition item, multi-crop views of every scale, iBOT on
        assert len(step.batch["transition"]) == 0 and len(step.batch["standalone_row"]) == 4
        assert step.losses["ibot"] > 0 and np.isfinite(step.losses["total"])
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["strategy"] == "dinov2_mad" and card["mad"]["standalone_p"] == 1.0 and card["mad"]["ibot"] is True
    assert "same-data baseline" in card["model"]
