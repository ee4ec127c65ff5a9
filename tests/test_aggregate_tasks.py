"""The paper's AB-MIL (Eq. 7 over the instances themselves), the one-magnification random-mixer rows,
slide-sheet tasks with their Average column, what every record names, and the design-decision summary."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from magflow.aggregate.abmil import mixer_description, run_abmil_tasks
from magflow.aggregate.abmil_model import ABMIL, build_slide_model
from magflow.aggregate.abmil_table import design_summary, write_auroc_table, write_design_figure
from magflow.aggregate.bags import RegionBag
from magflow.aggregate.methods import SlideMethod, slide_methods
from magflow.aggregate.mixer import MixerConfig, MixingEncoder
from magflow.aggregate.settings import MILConfig, check_tasks
from magflow.aggregate.synthetic import write_synthetic_regions
from magflow.errors import ConfigError
from magflow.sheet import read_sheet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_eq7_pools_the_instances_with_hand_set_attention_and_padding_gets_zero():
    model = ABMIL(in_dim=3, n_classes=2, attn_dim=2).eval()  # the defaults: Eq. 7, tanh attention (Eq. 8)
    assert isinstance(model.project, torch.nn.Identity)
    with torch.no_grad():  # score_i = wᵀ tanh(V z_i) = 2·tanh(z_i0) − 1·tanh(z_i2)
        model.attention.V.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        model.attention.w.weight.copy_(torch.tensor([[2.0, -1.0]]))
    z = [[0.5, 1.0, -2.0], [-1.0, 3.0, 0.0], [2.0, -1.0, 1.0]]
    x = torch.tensor([z + [[float("nan")] * 3, [9.0, 9.0, 9.0]]])  # two padded instances, one of them NaN
    valid = torch.tensor([[True, True, True, False, False]])
    pooled, attention = model.pool(x, valid)
    scores = [math.exp(2 * math.tanh(v[0]) - math.tanh(v[2])) for v in z]
    a = [s / sum(scores) for s in scores]
    expected = [sum(a[i] * z[i][d] for i in range(3)) for d in range(3)]
    assert attention[0].tolist()[3:] == [0.0, 0.0]
    assert attention[0, :3].tolist() == pytest.approx(a, abs=1e-6)
    assert pooled[0].tolist() == pytest.approx(expected, abs=1e-6)
    # the classifier reads exactly that vector
    assert torch.allclose(model(x, valid).logits, model.classifier(pooled), atol=1e-6)


def test_mil_defaults_are_the_papers_and_the_projection_form_is_an_option():
    config = MILConfig()
    assert (config.aggregator, config.attention, config.attn_dim, config.groups_per_batch) == \
        ("paper-eq7", "tanh", 16, 32)
    assert config.projection_dim is None
    encoder = MixingEncoder(MixerConfig(in_dim=4, width=8, depth=1, heads=2, n_cls=2, max_grid=8))
    model = build_slide_model("cls", 2, encoder=encoder, hidden_dim=config.projection_dim, attn_dim=16)
    assert model.head.classifier.in_features == 16 and model.head.attention.V.weight.shape == (16, 16)
    projection = MILConfig(aggregator="projection", hidden_dim=12)
    assert projection.projection_dim == 12 and projection.aggregator_record()["form"] == "projection"
    with pytest.raises(ConfigError, match="aggregator"):
        MILConfig(aggregator="mean")
    with pytest.raises(ConfigError, match="hidden_dim"):
        MILConfig(aggregator="projection", hidden_dim=None)  # a projection needs its width


def test_random_mixer_rows_for_every_magnification_and_mode_in_paper_order():
    methods = slide_methods({}, ["cls", "patch"], [0.5, 2.0, 1.0])
    random = [m for m in methods.values() if m.kind == "random"]
    assert [m.label for m in random] == [f"Random {mag} ({mode})" for mode in ("cls", "patch")
                                         for mag in ("5×", "10×", "20×", "all×")]
    assert [m.scales for m in random[:4]] == [(2.0,), (1.0,), (0.5,), ()]
    assert {m.id for m in random} == {f"random.{s}.{mode}" for s in ("2.000", "1.000", "0.500", "all")
                                      for mode in ("cls", "patch")}


def bag(seed: int) -> RegionBag:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([[0, 1, 1, 1, 1, 2, 2, 2, 2]]).repeat(3, 1)
    position = torch.randint(0, 4, (3, 9, 2), generator=g)
    return RegionBag(torch.randn(3, 9, 4, generator=g), scale, position, torch.ones(3, 9, dtype=torch.bool))


@pytest.mark.parametrize("mode", ["cls", "patch"])
def test_a_one_scale_mixer_sees_only_that_scales_tokens(mode):
    torch.manual_seed(0)
    encoder = MixingEncoder(MixerConfig(in_dim=4, width=8, depth=2, heads=2, n_cls=2, n_scales=3, max_grid=8))
    one = build_slide_model(mode, 2, encoder=encoder, scales=[1]).eval()
    every = build_slide_model(mode, 2, encoder=encoder).eval()
    x = bag(0)
    changed = RegionBag(x.tokens.clone(), x.scale_id, x.position, x.valid)
    changed.tokens[x.scale_id != 1] = torch.randn(int((x.scale_id != 1).sum()), 4) * 5
    changed.tokens[0, 0] = float("nan")  # even NaN on another scale cannot reach it
    with torch.no_grad():
        torch.testing.assert_close(one.instances(changed), one.instances(x))
        assert one.instances(x).shape[0] == (12 if mode == "patch" else 3)  # 4 tokens of scale 1 per region
        clean = RegionBag(changed.tokens.nan_to_num(), x.scale_id, x.position, x.valid)
        assert not torch.allclose(every.instances(clean), every.instances(x))  # the all-scale mixer does see them
        mine = RegionBag(x.tokens.clone(), x.scale_id, x.position, x.valid)
        mine.tokens[x.scale_id == 1] += 1.0
        assert not torch.allclose(one.instances(mine), one.instances(x))


def test_sheet_keeps_the_task_columns_it_is_asked_for(tmp_path):
    sheet = tmp_path / "slides.tsv"
    sheet.write_text("slide_id\tpath\tsplit\tlabel\tcross_scale\na\ta.tiff\ttrain\t0\tyes\nb\tb.tiff\ttest\t1\t\n")
    with pytest.raises(ConfigError, match=r"unknown columns \['cross_scale'\].*aggregate.tasks"):
        read_sheet(sheet)
    a, b = read_sheet(sheet, extra_columns=["label", "cross_scale"])
    assert (a.value("cross_scale"), b.value("cross_scale"), b.value("label")) == ("yes", None, "1")
    assert "cross_scale" not in a.as_dict()  # the standard columns only: the sheet schema stays as it is
    entries = {e.slide_id: e for e in (a, b)}
    assert check_tasks(["label"], entries, "slides.tsv") == ["label"]
    assert check_tasks(["label", "cross_scale"], entries, "slides.tsv") == ["label", "cross_scale"]
    with pytest.raises(ConfigError, match="no value in a column `grade`"):
        check_tasks(["label", "grade"], entries, "slides.tsv")  # absent (or empty): a typo, or not filled
    with pytest.raises(ConfigError, match="cannot be a task"):
        check_tasks(["split"], entries, "slides.tsv")


@pytest.fixture(scope="module")
def region_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regions")
    paths = []
    for i in range(8):
        path = folder / f"s{i}.h5"
        write_synthetic_regions(path, f"s{i}", seed=i, cols=6, rows=6, dim=8, t=3)
        paths.append(str(path))
    return paths


def test_two_tasks_give_two_columns_and_their_average(region_files, tmp_path):
    ids = [f"s{i}" for i in range(8)]
    tasks = {"label": {s: str(i % 2) for i, s in enumerate(ids)},
             "grade": {s: ("high" if i in (0, 3, 4, 7) else "low") if i != 5 else None for i, s in enumerate(ids)}}
    splits = dict(zip(ids, ["train", "train", "train", "train", "test", "test", "test", "test"]))
    outs = {task: tmp_path / "tiles.all" / f"{task}.json" for task in tasks}
    method = SlideMethod("tiles.all", "ABMIL all×", "tiles", "tiles", scales=(2.0, 1.0, 0.5))
    mil = {"lr": 1e-2, "epochs": 2, "freeze_epochs": 0, "seeds": [0, 1], "select": "last"}
    records = run_abmil_tasks(method, region_files, tasks, outs, mil=mil, sheet_splits=splits)
    assert list(records) == ["label", "grade"]
    grade = json.loads(outs["grade"].read_text())
    assert grade["n_slides"] == 7 and "s5" in grade["left_out"] and grade["classes"] == ["high", "low"]
    for record in records.values():  # every record names what made it
        assert record["pretraining_loss"] is None and record["mixer"]["kind"] == "none"
        assert record["aggregator"] == {"form": "paper-eq7", "attention": "tanh", "hidden_size": 16,
                                        "projection_dim": None, "groups_per_batch": 32}
        assert record["tasks"] == ["label", "grade"] and record["seeds"] == [0, 1]
        assert record["splits"]["source"] == "sheet" and set(record["splits"]["per_seed"]) == {"0", "1"}
        assert record["auroc"]["mean"] is not None
    write_auroc_table(list(records.values()), tmp_path / "t.tsv", tmp_path / "t.html")
    rows = list(csv.DictReader((tmp_path / "t.tsv").open(), delimiter="\t"))
    assert list(rows[0]) == ["method", "label", "grade", "Average"]
    mean = (records["label"]["auroc"]["mean"] + records["grade"]["auroc"]["mean"]) / 2
    assert rows[0]["Average"] == f"{mean:.3f}"
    # a task with one class among its slides is recorded as skipped with the reason, the others still run
    one = run_abmil_tasks(method, region_files, {"label": tasks["label"], "same": dict.fromkeys(ids, "x")},
                          {"label": tmp_path / "l.json", "same": tmp_path / "same.json"}, mil=mil, sheet_splits=splits)
    assert one["same"]["status"] == "skipped" and "one class" in one["same"]["reason"]
    assert one["label"]["auroc"] == records["label"]["auroc"]


def test_records_name_the_mixers_pretraining_loss(tmp_path):
    card = {"objective": "cmem", "training": {"objective": "cmem", "mask_ratio": 0.5, "context": 7}}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    mixer = SlideMethod("m.cls", "CMEM r=0.5 c=7 (cls)", "mixer", "cls", mixer="m")
    # a card from before the loss was an option: SimCLR's NT-Xent was the only form
    assert mixer_description(mixer, tmp_path, None, [2.0, 1.0])["pretraining_loss"] == "CMEM (simclr)"
    (tmp_path / "model_card.json").write_text(json.dumps({**card, "pretraining_loss": "CMEM (paper-eq5)"}))
    assert mixer_description(mixer, tmp_path, None, [2.0, 1.0])["pretraining_loss"] == "CMEM (paper-eq5)"
    one = mixer_description(SlideMethod("random.1.000.cls", "Random 10× (cls)", "random", "cls", scales=(1.0,)),
                            None, {"width": 8, "heads": 2}, [2.0, 1.0])
    assert one["kind"] == "random" and one["scales"] == [1.0] and one["pretraining_loss"] == "none (random init)"


def record(method_id, label, kind, mode, objective, aurocs):
    return [{"method": label, "method_id": method_id, "kind": kind, "mode": mode, "task": task, "status": "ok",
             "mixer": {"objective": objective}, "auroc": {"mean": value, "std": 0.0, "n": 1}, "per_seed": [{}]}
            for task, value in zip(("t1", "t2"), aurocs)]


def test_design_summary_averages_tasks_then_rows_sharing_a_choice(tmp_path):
    records = (record("mem.cls", "MEM (cls)", "mixer", "cls", "mem", (0.9, 0.7))
               + record("mem.patch", "MEM (patch)", "mixer", "patch", "mem", (0.6, 0.6))
               + record("cmem.cls", "CMEM (cls)", "mixer", "cls", "cmem", (0.5, 0.7))
               + record("random.all.cls", "Random all× (cls)", "random", "cls", None, (0.5, 0.6))
               + record("random.1.000.cls", "Random 10× (cls)", "random", "cls", None, (0.1, 0.1))
               + record("tiles.all", "ABMIL all×", "tiles", "tiles", None, (0.7, 0.7)))
    summary = design_summary(records)
    assert summary["pretraining"]["pretrained"] == pytest.approx([0.8, 0.6, 0.6])
    assert summary["pretraining"]["random"] == pytest.approx([0.55])  # the one-scale random row is not in it
    assert summary["objective"]["MEM"] == pytest.approx([0.8, 0.6])
    assert summary["objective"]["CMEM"] == pytest.approx([0.6])
    assert summary["pooled output"]["cls"] == pytest.approx([0.8, 0.6])
    assert summary["pooled output"]["patch"] == pytest.approx([0.6])
    write_design_figure(records, tmp_path / "design.png")
    assert (tmp_path / "design.png").read_bytes()[:4] == b"\x89PNG"


def test_a_pretrained_cmem_mixer_and_a_one_scale_random_mixer_write_records_naming_their_losses(region_files,
                                                                                                  tmp_path):
    from magflow.aggregate.pretrain_mixer import train_mixer
    from magflow.aggregate.settings import MixerTrainConfig
    tiny = {"objective": "cmem", "width": 16, "depth": 1, "heads": 2, "decoder_depth": 1, "projector_hidden": 16,
            "projector_dim": 8, "context": 3, "batch_size": 4, "iterations": 2, "warmup_iters": 1, "base_lr": 1e-3}
    train_mixer(MixerTrainConfig.from_dict({**tiny, "contrastive_loss": "simclr"}), region_files[:4],
                tmp_path / "mixer", progress=False, device="cpu")
    ids = [f"s{i}" for i in range(8)]
    tasks = {"label": {s: str(i % 2) for i, s in enumerate(ids)}}
    splits = dict(zip(ids, ["train"] * 4 + ["test"] * 4))
    mil = {"lr": 1e-3, "epochs": 1, "freeze_epochs": 1, "seeds": [0], "aggregator": "projection", "hidden_dim": 8}
    pretrained = SlideMethod("m.patch", "CMEM r=0.5 c=3 (patch)", "mixer", "patch", mixer="m")
    record = run_abmil_tasks(pretrained, region_files, tasks, {"label": tmp_path / "m.json"}, mil=mil,
                             sheet_splits=splits, mixer_dir=tmp_path / "mixer")["label"]
    assert record["pretraining_loss"] == "CMEM (simclr)" and record["mixer"]["objective"] == "cmem"
    assert record["aggregator"]["form"] == "projection" and record["aggregator"]["projection_dim"] == 8
    assert record["status"] == "ok" and record["kind"] == "mixer" and record["mode"] == "patch"
    random = slide_methods({}, ["cls"], [2.0, 1.0, 0.5])["random.1.000.cls"]
    record = run_abmil_tasks(random, region_files, tasks, {"label": tmp_path / "r.json"}, mil=mil,
                             sheet_splits=splits, mixer_train=tiny)["label"]
    assert record["method"] == "Random 10× (cls)" and record["mixer"]["scales"] == [1.0]
    assert record["pretraining_loss"] == "none (random init)" and record["status"] == "ok"


def test_auto_splits_are_seeded_when_the_slides_allow_it_else_the_sheets(region_files, tmp_path):
    ids = [f"s{i}" for i in range(8)]
    labels = {"label": {s: str(i % 2) for i, s in enumerate(ids)}}
    sheet = dict(zip(ids, ["train", "train", "train", "train", "test", "test", "test", "test"]))
    method = SlideMethod("tiles.all", "ABMIL all×", "tiles", "tiles", scales=(2.0, 1.0, 0.5))
    mil = {"lr": 1e-2, "epochs": 1, "freeze_epochs": 0, "seeds": [0], "select": "last", "test_fraction": 0.25,
           "val_fraction": 0.25}  # 4 slides a class: 4 folds
    seeded = run_abmil_tasks(method, region_files, labels, {"label": tmp_path / "all.json"}, mil=mil,
                             sheet_splits=sheet, split_mode="auto")["label"]
    assert seeded["splits"]["source"] == "seeded"
    assert seeded["split_choice"] == {"setting": "auto", "mode": "seeded", "note": ""}
    few = run_abmil_tasks(method, region_files[:3], labels, {"label": tmp_path / "few.json"}, mil=mil,
                          sheet_splits=sheet, split_mode="auto")["label"]  # 3 slides: no seeded 60/20/20 split
    assert few["status"] == "ok" and few["splits"]["source"] == "sheet"
    assert few["split_choice"]["mode"] == "sheet" and "seeded splits impossible" in few["split_choice"]["note"]
