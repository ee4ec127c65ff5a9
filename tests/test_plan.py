"""The workflow's plan (magflow.plan): every decision the Snakefile reads, made from a config and a slide sheet."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from magflow.aggregate.abmil import task_splits
from magflow.aggregate.settings import MILConfig
from magflow.config import load_config
from magflow.errors import ConfigError
from magflow.evaluate.splits import SlideSplit, choose_splits
from magflow.plan import build_plan, require_tileset
from magflow.plan import models as plan_models_module
from magflow.plan.aggregate import AggregatePlan
from magflow.plan.models import ModelPlan, mad_models, plan_mad, plan_models, resample_warning
from magflow.plan.runs import SAMPLER_FILENAME_COLUMNS, instance_names, plan_runs
from magflow.plan.slides import SlidePlan
from magflow.pretrain.runs import RUN_COLUMNS
from magflow.sampling.sweep import SWEEP_COLUMNS
from magflow.sheet import SlideEntry

REPO = Path(__file__).resolve().parents[1]


def demo_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    load_config(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the config's sheets are relative to the project


def test_every_tile_set_key_is_checked_by_one_function_naming_the_key():
    config = {"tilesets": {"train": {}, "eval": {}}, "embed": {"tileset": "eval"},
              "evaluate": {"mad": {"tileset": "mad"}}}
    assert require_tileset(config, "embed.tileset") == "eval"
    with pytest.raises(ConfigError, match=r"^evaluate\.mad\.tileset: 'mad' is not a tile set; tilesets: train, eval$"):
        require_tileset(config, "evaluate.mad.tileset")


@pytest.mark.parametrize("sheet, filename, first", [
    ("samplers.tsv", SAMPLER_FILENAME_COLUMNS, ["kernel~abs/strategy~single_lam~NA_mpp~0.5",
                                                "kernel~abs/strategy~du_lam~NA_mpp~NA"]),
    ("pretrain_runs.tsv", None, ["kernel~abs_strategy~du_lam~NA_mpp~NA_seed~0",
                                 "kernel~abs_strategy~cu_lam~NA_mpp~NA_seed~0"]),
    ("paper_runs.tsv", None, ["kernel~abs_strategy~single_lam~NA_mpp~0.25_seed~0",
                              "kernel~abs_strategy~single_lam~NA_mpp~0.5_seed~0"]),
    ("mixer_runs.tsv", None, ["objective~mem_mask_ratio~0.5_context~3", "objective~cmem_mask_ratio~0.5_context~3"])])
def test_run_names_are_the_results_folder_names(sheet, filename, first):
    """The names are the folders under results/samplers and results/models, as earlier versions named them."""
    frame = pd.read_csv(REPO / "config" / sheet, sep="\t", comment="#")
    columns = {"samplers.tsv": SWEEP_COLUMNS}.get(sheet, frame.columns)
    names = instance_names(frame[list(columns)], filename)
    assert names[:len(first)] == first and len(set(names)) == len(frame)


def test_runs_get_their_sampler_or_their_mad_settings(in_repo):
    plan = plan_runs(demo_config())
    rows = pd.read_csv(REPO / "config" / "pretrain_runs.tsv", sep="\t", comment="#")
    assert list(plan.runs) == instance_names(rows[list(RUN_COLUMNS)])
    mad = plan.runs["kernel~NA_strategy~mad_lam~NA_mpp~NA_seed~0"]
    assert mad.sampler is None and mad.mad["strategy"] == "mad" and mad.tileset == "mad" and mad.seed == 0
    cu = plan.runs["kernel~abs_strategy~cu_lam~NA_mpp~NA_seed~0"]
    assert cu.mad is None and cu.sampler == "kernel~abs/strategy~cu_lam~NA_mpp~NA" and cu.tileset == "train"
    assert plan.mad_runs() == ["kernel~NA_strategy~mad_lam~NA_mpp~NA_seed~0"]
    assert plan.kernels() == ["abs", "area"]
    assert plan.sampler_names("area") == [n for n in plan.sampler_names() if n.startswith("kernel~area/")]


def test_a_run_without_its_sampler_is_named_by_its_line(in_repo, tmp_path):
    config = demo_config()
    runs = tmp_path / "runs.tsv"
    runs.write_text("kernel\tstrategy\tlam\tmpp\tseed\nabs\tdu\tNA\tNA\t0\nabs\tcu_maxavg\t0.5\tNA\t1\n")
    config["pretrain"]["runs"] = str(runs)
    with pytest.raises(ConfigError, match=r"runs\.tsv, line 3: no row of the sampler sweep"):
        plan_runs(config)


def fake_models(runs, external=()):
    return ModelPlan(list(runs), {name: object() for name in external}, {name: {"timm_name": "x"} for name in external},
                     {f"{run}~init": run for run in runs})


def test_controls_sources_and_files():
    models = fake_models(["a", "b"], ["ext"])
    assert models.embed_models == ["a", "b", "ext"] and models.names == ["a", "b", "ext", "a~init", "b~init"]
    assert models.control("a") == "a~init" and models.control("ext") is None and models.control("a~init") is None
    assert models.source("a~init") == {"init_control_of": "results/models/a"}
    assert models.source("a") == "results/models/a" and models.source("ext") == {"timm_name": "x"}
    assert models.files("b~init") == {"card": "results/models/b/model_card.json"}


@pytest.mark.parametrize("name, message", [("run1", "is also the name of a pretraining run"),
                                           ("run1~init", "is the name of a run's init control")])
def test_an_external_model_named_like_a_run_or_a_control_is_refused(monkeypatch, name, message):
    monkeypatch.setattr(plan_models_module, "external_models", lambda settings: dict.fromkeys(settings))
    config = {"embed": {"external": {name: {}}, "tileset": "eval"}, "tilesets": {"eval": {}}}
    with pytest.raises(ConfigError, match=f"embed.external: {name} {message}; rename it"):
        plan_models(config, ["run1", "run2"])


def test_mad_models_come_mad_runs_first_each_with_its_control_capped():
    models = fake_models(["a", "m1", "b", "m2"], ["ext"])
    assert mad_models(models, ["m1", "m2"], 3) == ["m1", "m1~init", "m2", "m2~init", "a", "a~init"]
    assert mad_models(models, ["m1", "m2"], None)[-3:] == ["b", "b~init", "ext"]  # an external model has no control
    assert mad_models(models, [], 1) == ["a", "a~init"]


def test_the_mad_evaluation_needs_its_tile_set_and_a_labelled_slide():
    models = fake_models(["a"])
    config = {"evaluate": {"mad": demo_config()["evaluate"]["mad"]},
              "tilesets": {"mad": {"scales": [0.25, 0.5, 1.0, 2.0]}}}
    assert plan_mad(config, models, [], {"s1": "s1.png"}).models == ["a", "a~init"]
    assert plan_mad(config, models, [], {}).models == []  # no label mask: nothing to score
    assert plan_mad({**config, "tilesets": {}}, models, [], {"s1": "s1.png"}).models == []


def test_finest_resampling_warns_when_the_tiles_are_too_small():
    config = {"embed": {"tileset": "eval", "mpps": [0.25, 2.0], "resample": "finest"},
              "tilesets": {"eval": {"scales": [0.25], "cell_px": 224, "source_px": 512}}}
    assert "source_px >= 1792" in resample_warning(config)
    assert resample_warning({**config, "embed": {**config["embed"], "resample": "nearest_scale"}}) is None


def entry(slide_id, split="train", **values):
    extra = {k: values.pop(k) for k in list(values) if k not in ("label", "annotation", "group")}
    return SlideEntry(slide_id, values.pop("path", f"results/phantom/{slide_id}.tiff"), split, extra=extra, **values)


def test_label_sources_masks_and_labelled_slides():
    slides = SlidePlan((entry("a", label="0"), entry("b", annotation="b.csv", path="b.svs"),
                        SlideEntry("c", "c.svs", "test"), entry("d", split="val", grade="high")))
    assert slides.label_sources() == {"a": "results/phantom/a.labels.png", "b": "b.csv", "c": None,
                                      "d": "results/phantom/d.labels.png"}
    assert list(slides.masks()) == ["a", "d"]  # a CSV is no mask
    assert slides.train_ids() == ["a", "b"]
    assert AggregatePlan(tasks=["label"]).labelled_slides(slides) == ["a"]
    assert AggregatePlan(tasks=["label", "grade"]).labelled_slides(slides) == ["a", "d"]


def test_the_demo_plan(in_repo, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python"])
    plan = build_plan(demo_config(), targets=["pretrain"])
    assert plan.aggregate.encoder is None  # pretraining only: aggregation is not planned
    plan = build_plan(demo_config())
    assert plan.aggregate.encoder in plan.models.runs and plan.aggregate.tasks == ["label", "cross_scale"]
    labelled = [e.slide_id for e in plan.slides.entries if e.label is not None or e.value("cross_scale") is not None]
    assert plan.aggregate.labelled_slides(plan.slides) == labelled
    assert plan.mad.models[:2] == ["kernel~NA_strategy~mad_lam~NA_mpp~NA_seed~0",
                                   "kernel~NA_strategy~mad_lam~NA_mpp~NA_seed~0~init"]
    assert set(plan.mad.slides) == set(plan.slides.masks()) and not plan.warnings


def test_planning_imports_neither_torch_nor_scikit_learn():
    """The Snakefile is parsed again in every cluster job: planning stays quick."""
    code = ("import sys, yaml; from magflow.config import load_config; from magflow.plan import build_plan; "
            "config = yaml.safe_load(open('config/config.yaml')); "
            "load_config(config, 'workflow/schemas/config.schema.yaml'); build_plan(config); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def seeded_ok():
    return [SlideSplit(frozenset("a"), frozenset("b"), frozenset("c"), 0)]


def seeded_impossible():
    raise ValueError("3 slide/group units cannot be split")


def test_auto_means_seeded_when_possible_else_the_sheet():
    assert choose_splits("auto", seeded_ok).mode == "seeded"
    auto = choose_splits("auto", seeded_impossible)
    assert auto.mode == "sheet" and "seeded splits impossible (3 slide/group units" in auto.note
    assert choose_splits("sheet", seeded_impossible).mode == "sheet"  # never tries the seeded splits
    with pytest.raises(ValueError, match="cannot be split"):
        choose_splits("seeded", seeded_impossible)
    with pytest.raises(ValueError, match="must be one of"):
        choose_splits("sheets", seeded_ok)


def slide_set(n):
    ids = tuple(f"s{i}" for i in range(n))
    return SimpleNamespace(ids=ids, labels=np.arange(n) % 2, groups=ids)


def test_abmil_follows_the_same_split_setting():
    config = MILConfig.from_dict({"seeds": [0, 1]})
    many, few = slide_set(10), slide_set(3)
    sheet = {"s0": "train", "s1": "train", "s2": "test"}
    assert task_splits(many, config, "auto", sheet) == (None, {"setting": "auto", "mode": "seeded", "note": ""})
    splits, choice = task_splits(few, config, "auto", sheet)
    assert splits == sheet and choice["mode"] == "sheet" and "seeded splits impossible" in choice["note"]
    assert task_splits(many, config, "sheet", sheet)[0] == sheet
    assert task_splits(few, config, "seeded", sheet)[0] is None  # run_abmil records the task as skipped
    no_train = {"s0": "val", "s1": "test", "s2": "test"}
    splits, choice = task_splits(few, config, "auto", no_train)
    assert splits is None and choice["mode"] == "seeded" and "no training slide" in choice["note"]


def test_a_slide_is_a_tracked_input_when_it_exists_or_a_rule_writes_it(tmp_path):
    present = tmp_path / "present.svs"
    present.write_bytes(b"")
    slides = SlidePlan((entry("p"), SlideEntry("here", str(present), "train"),
                        SlideEntry("gone", str(tmp_path / "gone.svs"), "train")))
    assert slides.tracked_input("p") == "results/phantom/p.tiff"  # the phantom rule writes it
    assert slides.tracked_input("here") == str(present)
    assert slides.tracked_input("gone") is None  # its own job fails, naming it; the others run


def test_rule_resources_refuse_what_contradicts_the_rules_own_settings():
    from magflow.plan import rule_resources

    assert rule_resources({"embed": {"mem_mb": 100}}, "embed", gpu=1) == {"mem_mb": 100, "gpu": 1}
    assert rule_resources({}, "evaluate") == {}
    with pytest.raises(ConfigError, match=r"resources\.embed\.gpu.*contradicts 1"):
        rule_resources({"embed": {"gpu": 2}}, "embed", gpu=1)


def test_a_benchmark_step_tracks_its_fixture_folder_or_its_label_file(tmp_path):
    from magflow.benchmark.config import BenchmarkSpec

    def spec(layout, **extra):
        return BenchmarkSpec.from_config("b", {"layout": layout, "root": str(tmp_path), **extra}, check_paths=False)

    assert spec("tcga-ms", labels=str(tmp_path / "l.csv")).input_path == tmp_path / "l.csv"
    assert spec("bracs-ms", patients=str(tmp_path / "p.xlsx")).input_path == tmp_path / "p.xlsx"
    fixture = BenchmarkSpec.from_config("b", {"layout": "tcga-ms", "root": "results/benchmark_fixture/b", "fixture": True},
                                        check_paths=False)
    assert fixture.input_path == Path("results/benchmark_fixture/b")  # its rule writes the folder
