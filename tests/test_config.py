from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from magflow.config import check_config
from magflow.errors import ConfigError
from magflow.sheet import read_sheet

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid_and_schema_fills_defaults():
    check_config(default_config(), SCHEMA)
    minimal = {"slides": "x.tsv"}
    validate(minimal, str(SCHEMA))
    assert minimal["tissue"]["mpp"] == 8.0 and minimal["read"]["upsample_tolerance"] == 0.02


def test_every_config_key_is_documented():
    readme = (REPO / "config" / "README.md").read_text()
    schema = yaml.safe_load(SCHEMA.read_text())

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name
            yield from keys(sub, prefix + name + ".")

    missing = [key for key in keys(schema) if f"`{key}`" not in readme]
    assert not missing, f"undocumented config keys: {missing}"


def test_unknown_key_is_named_with_the_allowed_ones():
    config = default_config()
    config["tissue"]["min_saturaton"] = 0.1
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA)
    message = str(caught.value)
    assert "unknown config key 'tissue.min_saturaton'" in message and "min_saturation" in message


@pytest.mark.parametrize("section, key, value, expected", [
    ("tissue", "mpp", "eight", "'tissue.mpp': 'eight' is not of type 'number'"),
    ("tissue", "mpp", -1, "'tissue.mpp'"),
    ("read", "interpolation", "cubic", "'read.interpolation': 'cubic' is not one of"),
    ("phantom", "jpeg_quality", 5, "'phantom.jpeg_quality'"),
])
def test_wrong_type_or_value_is_named(section, key, value, expected):
    config = default_config()
    config[section][key] = value
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        check_config(config, SCHEMA)
    assert expected in str(caught.value)


def _sheet(tmp_path, text):
    path = tmp_path / "slides.tsv"
    path.write_text(text)
    return path


def test_sheet_reads_optional_columns(tmp_path):
    entries = read_sheet(_sheet(tmp_path, "slide_id\tpath\tmpp\tsplit\tgroup\tlabel\n"
                                          "a\ta.svs\t\ttrain\tp1\t1\nb\tb.svs\t0.5\ttest\t\t\n"))
    assert [e.slide_id for e in entries] == ["a", "b"]
    assert entries[0].mpp is None and entries[1].mpp == 0.5 and entries[0].group == "p1"
    assert entries[1].group is None and entries[1].label is None


@pytest.mark.parametrize("body, expected", [
    ("slide_id\tpath\tsplit\na\ta.svs\ttrain\na\tb.svs\ttest\n", "unique; repeated: a"),
    ("slide_id\tpath\tsplit\na\ta.svs\ttraining\n", "line 2: split 'training' must be one of"),
    ("slide_id\tpath\tmpp\tsplit\na\ta.svs\tabc\ttrain\n", "line 2: mpp 'abc' is not a number"),
    ("slide_id\tpath\tmpp\tsplit\na\ta.svs\t-1\ttrain\n", "mpp must be a positive number"),
    ("slide_id\tpath\n", "missing columns ['split']"),
    ("slide_id\tpath\tsplit\tcolour\n", "unknown columns ['colour']"),
    ("slide_id\tpath\tsplit\na b\ta.svs\ttrain\n", "slide_id 'a b' may use only"),
    ("slide_id\tpath\tsplit\na\t\ttrain\n", "column 'path' is empty"),
])
def test_sheet_errors_name_file_line_and_column(tmp_path, body, expected):
    with pytest.raises(ConfigError) as caught:
        read_sheet(_sheet(tmp_path, body))
    assert expected in str(caught.value) and "slides.tsv" in str(caught.value)


def test_missing_sheet_says_which_key(tmp_path):
    with pytest.raises(ConfigError, match="set `slides` in the config"):
        read_sheet(tmp_path / "none.tsv")


def test_command_line_strings_inside_mappings_become_the_types_the_schema_wants():
    """`--config tissue='{"mpp": 4.0}'` reaches the workflow as {"mpp": "4.0"} (Snakemake reads nested
    values as plain strings); they are read as YAML where the schema wants no string."""
    from snakemake.cli import parse_config

    config = default_config()
    override = parse_config(['tissue={"mpp": 4.0}', 'evaluate={"seeds": [0, 1], "splits": "sheet"}',
                             'tilesets={"train": {"max_tiles_per_scale": null}}'])
    assert override["tissue"]["mpp"] == "4.0"  # what Snakemake hands over
    for key, value in override.items():
        config[key].update(value) if key != "tilesets" else config["tilesets"]["train"].update(value["train"])
    check_config(config, SCHEMA)
    assert config["tissue"]["mpp"] == 4.0 and config["evaluate"]["seeds"] == [0, 1]
    assert config["evaluate"]["splits"] == "sheet" and config["tilesets"]["train"]["max_tiles_per_scale"] is None
    config["tissue"]["mpp"] = "four"
    with pytest.raises(ConfigError, match="'tissue.mpp': 'four' is not of type 'number'"):
        check_config(config, SCHEMA)


def test_settings_blocks_refuse_unknown_keys_and_read_command_line_strings():
    from dataclasses import dataclass

    from magflow.config import settings_from_dict

    @dataclass(frozen=True)
    class Block:
        lr: float = 1e-3
        seeds: tuple[int, ...] = (0, 1)
        name: str = "x"

    assert settings_from_dict(Block, {"lr": "0.5", "seeds": [3]}, "demo") == Block(0.5, (3,), "x")
    assert settings_from_dict(Block, {"seeds": "[4, 5]", "name": "1"}, "demo") == Block(1e-3, (4, 5), "1")
    with pytest.raises(ConfigError, match=r"unknown demo key\(s\) \['lrr'\]; allowed: lr, seeds, name"):
        settings_from_dict(Block, {"lrr": 1}, "demo")
    with pytest.raises(ConfigError, match="demo.lr: expected float like 0.001, got 'fast'"):
        settings_from_dict(Block, {"lr": "fast"}, "demo")
