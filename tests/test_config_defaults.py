"""One place for every default: the config schema. The settings dataclasses, the command line and
config/README.md take theirs from it, and the workflow fills them into the config it runs with."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from magflow import config_docs, defaults
from magflow.aggregate.settings import MILConfig, MixerConfig, MixerTrainConfig
from magflow.benchmark.config import BenchmarkSpec
from magflow.config import ConfigError, load_config
from magflow.defaults import DEFAULT_TEXT, default, defaults_of
from magflow.evaluate.mad_eval import MadEvalSettings
from magflow.evaluate.settings import EvalSettings
from magflow.phantom.slide import PhantomSpec
from magflow.preprocess.extract_tiles import TileSetParams
from magflow.preprocess.tissue import TissueParams
from magflow.pretrain.mad_config import MadConfig
from magflow.pretrain.train_config import TrainConfig
from magflow.sampling.sampler import SamplerConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# (settings class, its config block, field -> key inside the block where the names differ)
SETTINGS = [
    (TrainConfig, "pretrain.train", {}),
    (MadConfig, "pretrain.mad", {}),
    (MixerTrainConfig, "aggregate.pretrain", {}),
    (MixerConfig, "aggregate.pretrain", {}),
    (MILConfig, "aggregate.abmil", {}),
    (EvalSettings, "evaluate", {"rankme_definition": "rankme.definition", "coarse_mpp": "hierarchy.coarse_mpp",
                                "fine_mpp": "hierarchy.fine_mpp", "segmentation_mpp": "segmentation.train_mpp"}),
    (MadEvalSettings, "evaluate.mad", {}),
    (TissueParams, "tissue", {}),
    (TileSetParams, "tilesets.<name>", {}),
    (BenchmarkSpec, "benchmarks.<name>", {}),
    (PhantomSpec, "phantom", {}),
]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("cls, block, names", SETTINGS, ids=[c.__name__ for c, _, _ in SETTINGS])
def test_settings_defaults_are_the_schemas(cls, block, names):
    schema = defaults_of(block)
    for name, key in names.items():
        schema[name] = default(f"{block}.{key}")
    checked = 0
    for field in dataclasses.fields(cls):
        if field.name not in schema:
            continue
        value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert _plain(value) == schema[field.name], f"{cls.__name__}.{field.name}: {value!r} != {block}"
        checked += 1
    assert checked, f"{cls.__name__} shares no key with {block}"


def test_block_settings_classes_cover_their_whole_block():
    """Every key of the blocks that only a settings class reads is one of its fields, and back."""
    for cls, block in [(TrainConfig, "pretrain.train"), (MixerTrainConfig, "aggregate.pretrain"),
                       (MILConfig, "aggregate.abmil"), (TissueParams, "tissue"), (MadEvalSettings, "evaluate.mad")]:
        assert {f.name for f in dataclasses.fields(cls)} == set(defaults_of(block)), block


def test_sampler_defaults_are_the_schemas():
    config = SamplerConfig(strategy="cu")
    assert [config.lo, config.hi] == default("samplers.range") and config.grid_step == default("samplers.grid_step")
    assert list(config.du_mpps) == default("samplers.du_mpps")


def test_every_schema_key_has_a_default_and_a_description():
    missing = []
    for key, node, required in defaults.keys():
        if not str(node.get("description", "")).strip():
            missing.append(f"{key}: description")
        if "default" not in node and DEFAULT_TEXT not in node and not required:
            missing.append(f"{key}: default (or {DEFAULT_TEXT}, what applies when it is left out)")
    assert not missing, missing


def test_every_block_is_closed():
    """No block takes keys the schema does not name, but for the maps of named entries and the free
    keyword arguments handed to timm."""
    free = {"pretrain.train.arch_kwargs", "embed.external.<name>.timm_kwargs"}
    open_blocks = [key for key, node, _ in defaults.keys() if node.get("type") == "object" and key not in free
                   and node.get("additionalProperties", True) is True]
    assert not open_blocks, open_blocks


def test_the_package_reads_the_workflow_schema():
    assert defaults.schema_text() == SCHEMA.read_text(encoding="utf-8")
    assert default("tissue.mpp") == 8.0 and default("tilesets.<name>.cell_px") == 224
    with pytest.raises(KeyError):
        default("tilesets.<name>.scales")  # required: no default


def test_defaults_are_filled_in_everywhere():
    config = {"slides": "x.tsv", "tissue": {"mpp": 4.0},
              "tilesets": {"t": {"scales": [0.5]}},
              "benchmarks": {"b": {"layout": "tcga-ms", "root": "data/b"}, "off": None},
              "pretrain": {"train": {"base_lr": 0.5}, "mad": {"train": {"arch": "vit_base_patch16_224"}}},
              "resources": {"embed": {"mem_mb": 100}}}
    load_config(config, SCHEMA)
    assert config["tissue"] == {**defaults_of("tissue"), "mpp": 4.0}
    assert config["read"] == defaults_of("read") and config["evaluate"]["mad"] == defaults_of("evaluate.mad")
    assert config["tilesets"]["t"] == {"scales": [0.5], **defaults_of("tilesets.<name>")}
    assert config["benchmarks"]["b"]["seed"] == 42 and config["benchmarks"]["off"] is None
    assert config["pretrain"]["train"] == {**defaults_of("pretrain.train"), "base_lr": 0.5}
    assert config["pretrain"]["mad"]["train"] == {"arch": "vit_base_patch16_224"}  # overrides only what it names
    assert config["resources"] == {"embed": {"mem_mb": 100}}  # the profile's default-resources stay in charge
    assert TrainConfig.from_config(config["pretrain"]["train"]) == TrainConfig(base_lr=0.5)


def test_demo_and_paper_configs_load_to_the_same_values_with_or_without_their_default_keys():
    """config/config.yaml and config/paper.yaml say only what differs from the schema where a key merely
    restated its default: loading fills it back."""
    for name in ("config.yaml", "paper.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        loaded = load_config(copy.deepcopy(config), SCHEMA)
        again = load_config(copy.deepcopy(loaded), SCHEMA)
        assert loaded == again


def test_every_problem_is_named_once_and_settings_ranges_are_left_to_their_class():
    config = {"slides": "x.tsv", "tissue": {"mpp": -1, "min_saturaton": 0.1}, "pretrain": {"train": {"base_lr": -1}}}
    with pytest.raises(ConfigError) as caught:
        load_config(config, SCHEMA)
    message = str(caught.value)
    assert "'tissue.mpp'" in message and "'tissue.min_saturaton'" in message
    assert "base_lr" not in message  # TrainConfig's own message: pretrain.train.base_lr: must be >= 0 (...)
    with pytest.raises(ConfigError, match=r"pretrain.train.base_lr: must be >= 0"):
        TrainConfig.from_config({"base_lr": -1})
    with pytest.raises(ConfigError, match="'pretrain.train.views': 'crops' is not one of"):
        load_config({"slides": "x.tsv", "pretrain": {"train": {"views": "crops"}}}, SCHEMA)


def test_config_readme_is_generated_from_the_schema():
    committed = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    assert committed == config_docs.render(), (
        f"config/README.md is out of date with the schema; regenerate it: {config_docs.COMMAND}")


@pytest.mark.parametrize("argv, key, dest", [
    (["phantom", "out"], "phantom.seed", "seed"), (["phantom", "out"], "phantom.width_um", "width_um"),
    (["phantom", "out"], "phantom.mpp", "mpp"),
    (["tissue-mask", "s", "--out-mask", "m", "--out-qc", "q"], "tissue.mpp", "tissue_mpp"),
    (["tissue-mask", "s", "--out-mask", "m", "--out-qc", "q"], "tissue.min_saturation", "min_saturation"),
    (["extract-tiles", "s", "--mask", "m", "--out", "o"], "tilesets.<name>.cell_px", "cell_px"),
    (["extract-tiles", "s", "--mask", "m", "--out", "o"], "tilesets.<name>.source_px", "source_px"),
    (["extract-tiles", "s", "--mask", "m", "--out", "o"], "tilesets.<name>.min_tissue", "min_tissue"),
    (["extract-tiles", "s", "--mask", "m", "--out", "o"], "extract.workers", "workers"),
    (["optimize-sampler", "--strategy", "cu", "--out", "o"], "samplers.range", "range"),
    (["optimize-sampler", "--strategy", "cu", "--out", "o"], "samplers.grid_step", "grid_step"),
    (["abmil", "r.h5", "--sheet", "s", "--out", "o"], "aggregate.tasks", "tasks"),
])
def test_command_line_defaults_are_the_schemas(argv, key, dest):
    from magflow.cli import build_parser

    assert getattr(build_parser().parse_args(argv), dest) == default(key)
