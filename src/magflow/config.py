"""Config validation with messages that name the exact key and say how to fix it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

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


def check_config(config: Mapping[str, Any], schema_path: str | os.PathLike[str]) -> None:
    """Raise one ConfigError listing every problem, each naming its key; the schema sets no defaults here."""
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {_describe(error)}" for error in errors)
        raise ConfigError(f"invalid configuration:\n{lines}\nFix config/config.yaml (or your --config / "
                          "--configfile override); every key is documented in config/README.md.")
