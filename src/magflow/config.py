"""Config validation with messages that name the exact key and say how to fix it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import jsonschema
import yaml

from magflow.errors import ConfigError


def _key(path: Any) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, Mapping) else []
        prefix = f"{where}." if error.absolute_path else ""
        names = ", ".join(f"'{prefix}{name}'" for name in extra)
        hint = f"allowed keys here: {', '.join(allowed)}" if allowed else "no fixed keys here"
        return f"unknown config key {names}; {hint}. Check the spelling against config/README.md."
    description = error.schema.get("description", "") if isinstance(error.schema, Mapping) else ""
    detail = f" ({description})" if description else ""
    return f"config key '{where}': {error.message}{detail}."


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float), "integer": (int,), "boolean": (bool,), "null": (type(None),), "array": (list,),
    "object": (dict,),
}


def _matches(value: Any, types: list[str]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a number to JSON Schema
        return "boolean" in types
    return any(isinstance(value, _PYTHON_TYPES.get(name, ())) for name in types)


def coerce_cli_strings(config: Any, schema: Mapping[str, Any]) -> Any:
    """``config`` with the strings that Snakemake's ``--config key='{...}'`` leaves inside mappings and
    lists read as YAML wherever the schema wants no string there (``tissue='{"mpp": 4.0}'`` arrives as
    ``{"mpp": "4.0"}``). A string the schema allows, or one whose YAML value has the wrong type, is kept
    as it is, so validation still names it."""
    if isinstance(config, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in config.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                config[key] = coerce_cli_strings(value, sub)
        return config
    if isinstance(config, list):
        items = schema.get("items")
        return [coerce_cli_strings(v, items) for v in config] if isinstance(items, Mapping) else config
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(config, str) and types and "string" not in types:
        try:
            value = yaml.safe_load(config)
        except yaml.YAMLError:
            return config
        if _matches(value, types):
            return coerce_cli_strings(value, schema) if isinstance(value, (dict, list)) else value
    return config


def check_config(config: Mapping[str, Any], schema_path: str | os.PathLike[str]) -> None:
    """Raise one ConfigError listing every problem, each naming its key; the schema sets no defaults here.

    Strings that ``--config`` left inside mappings are first read as YAML where the schema wants
    numbers, booleans, null or lists (see :func:`coerce_cli_strings`)."""
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    if isinstance(config, dict):
        coerce_cli_strings(config, schema)  # in place: the workflow goes on with the typed values
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {_describe(error)}" for error in errors)
        raise ConfigError(f"invalid configuration:\n{lines}\nFix config/config.yaml (or your --config / "
                          "--configfile override); every key is documented in config/README.md.")


Settings = TypeVar("Settings")


def settings_from_dict(cls: type[Settings], values: Mapping[str, Any] | None, key: str) -> Settings:
    """A settings dataclass from a config block: defaults overridden by ``values``, lists turned into
    tuples where the default is a tuple (YAML has no tuples), and an unknown key refused with the
    allowed ones, named under ``key`` (e.g. ``aggregate.abmil``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = dict(values or {})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {key} key(s) {unknown}; allowed: {', '.join(fields)}")
    for name, value in values.items():
        default = fields[name].default
        if isinstance(value, str) and isinstance(default, (bool, int, float, tuple)):
            values[name] = value = _yaml_value(value)  # `--config` hands nested values over as strings
            if isinstance(value, str):
                kind = "a list" if isinstance(default, tuple) else type(default).__name__
                raise ConfigError(f"{key}.{name}: expected {kind} like {default!r}, got {value!r}")
        if isinstance(default, tuple) and isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
