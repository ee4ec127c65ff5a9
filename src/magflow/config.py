"""Config validation with messages that name the exact key and say how to fix it."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jsonschema
import yaml

from magflow.defaults import CHECKED_BY, SAFE_LOADER, entry_schema, resolve, schema_text
from magflow.defaults import schema as packaged_schema
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


def coerce_cli_strings(config: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """``config`` with the strings that Snakemake's ``--config key='{...}'`` leaves inside mappings and
    lists read as YAML wherever the schema wants no string there (``tissue='{"mpp": 4.0}'`` arrives as
    ``{"mpp": "4.0"}``). A string the schema allows, or one whose YAML value has the wrong type, is kept
    as it is, so validation still names it."""
    root = schema if root is None else root
    schema = resolve(schema, root)
    if isinstance(config, dict):
        properties = schema.get("properties", {})
        extra = entry_schema(schema, root)
        for key, value in config.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                config[key] = coerce_cli_strings(value, sub, root)
        return config
    if isinstance(config, list):
        items = schema.get("items")
        return [coerce_cli_strings(v, items, root) for v in config] if isinstance(items, Mapping) else config
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(config, str) and types and "string" not in types:
        try:
            value = yaml.safe_load(config)
        except yaml.YAMLError:
            return config
        if _matches(value, types):
            return coerce_cli_strings(value, schema, root) if isinstance(value, (dict, list)) else value
    return config


def fill_defaults(config: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """``config`` (in place) with the schema's default of every key it leaves out, recursively: inside
    blocks given in part, inside blocks filled in from their own default, and inside each entry of a map of
    named entries (``tilesets``, ``benchmarks``, ``embed.external``, ...). A key without a fixed default
    (``x-default``: found at run time, e.g. a slurm profile's resources) stays out, and so does every key
    of a block of overrides (``pretrain.mad.train``, whose keys replace ``pretrain.train``'s)."""
    root = schema if root is None else root
    schema = resolve(schema, root)
    if not isinstance(config, dict):
        return config
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        sub = resolve(sub, root)
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if key in config:
            fill_defaults(config[key], sub, root)
    entry = entry_schema(schema, root)
    if entry is not None:
        for key, value in config.items():
            if key not in properties:
                fill_defaults(value, entry, root)
    return config


# range checks that a settings dataclass (the schema's x-checked-by) repeats with messages of its own
_RANGES = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "uniqueItems")


def _checked_by_settings(error: jsonschema.ValidationError, schema: Mapping[str, Any]) -> bool:
    """Whether ``error`` is a range check inside a block that its settings dataclass checks again."""
    if error.validator not in _RANGES:
        return False
    node = resolve(schema, schema)
    for part in error.absolute_path:
        if CHECKED_BY in node:
            return True
        sub = node.get("properties", {}).get(part) if isinstance(part, str) else None
        if sub is None:
            sub = entry_schema(node, schema) if isinstance(part, str) else node.get("items")
        if not isinstance(sub, Mapping):
            return False
        node = resolve(sub, schema)
    return CHECKED_BY in node


def _problems(config: Any, schema: Mapping[str, Any], settings_ranges: bool = True) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(error) for error in errors if settings_ranges or not _checked_by_settings(error, schema)]


def _raise(problems: Sequence[str]) -> None:
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"invalid configuration:\n{lines}\nFix config/config.yaml (or your --config / "
                          "--configfile override); every key is documented in config/README.md.")


def _read_schema(schema_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The schema at ``schema_path``; the package's parsed copy (read once per process) when it is that file."""
    with open(schema_path, encoding="utf-8") as handle:
        text = handle.read()
    return packaged_schema() if text == schema_text() else yaml.load(text, Loader=SAFE_LOADER)


def check_config(config: Mapping[str, Any], schema_path: str | os.PathLike[str]) -> None:
    """Raise one ConfigError listing every problem, each naming its key; no defaults are filled in here
    (:func:`load_config` is the workflow's one call: it fills them in too).

    Strings that ``--config`` left inside mappings are first read as YAML where the schema wants
    numbers, booleans, null or lists (see :func:`coerce_cli_strings`)."""
    schema = _read_schema(schema_path)
    if isinstance(config, dict):
        coerce_cli_strings(config, schema)  # in place: the workflow goes on with the typed values
    _raise(_problems(dict(config), schema))


def load_config(config: dict[str, Any], schema_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The workflow's one check of its config, in place: ``--config`` strings read as the types the schema
    wants (:func:`coerce_cli_strings`), every default filled in (:func:`fill_defaults`), then one
    ConfigError listing every problem, each naming its key. A range check inside a block that a settings
    dataclass checks again (the schema's ``x-checked-by``: ``pretrain.train``, ``aggregate.pretrain``,
    ...) is left to that dataclass, whose message names the key and says what the value is for; the
    workflow runs it right after, before any job. Returns ``config``."""
    schema = _read_schema(schema_path)
    coerce_cli_strings(config, schema)
    fill_defaults(config, schema)
    _raise(_problems(config, schema, settings_ranges=False))
    return config


Settings = TypeVar("Settings")


class SettingError(ConfigError):
    """One bad field of a settings dataclass, named ``section.name``. A caller that knows where the
    values came from names it there instead (:meth:`under`, :meth:`reworded`)."""

    def __init__(self, section: str, name: str, problem: str) -> None:
        self.section, self.name, self.problem = section, name, problem
        super().__init__(f"{section}.{name}: {problem}")

    def under(self, section: str) -> SettingError:
        return SettingError(section, self.name, self.problem)

    def reworded(self, where: str) -> ConfigError:
        """The same problem with its field named by ``where`` (e.g. a sheet row and column)."""
        return ConfigError(f"{where}: {self.problem}")


Requirement = Callable[[bool, str, str], None]


def requirement(settings: Any, section: str) -> Requirement:
    """``need(ok, name, what)``: raise a :class:`SettingError` naming ``section.name``, what it must be
    and the value given, unless ``ok``."""
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise SettingError(section, name, f"{what}, got {getattr(settings, name)!r}")
    return need


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(hint: Any) -> tuple[str, Any]:
    """('number' | 'integer' | 'boolean' | 'string' | 'mapping' | 'tuple' | 'any', item hint of a tuple)."""
    if hint is bool:
        return "boolean", None
    if hint is int:
        return "integer", None
    if hint is float:
        return "number", None
    if hint is str:
        return "string", None
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return "tuple", args[0] if args else Any
    if origin is dict or hint is dict:
        return "mapping", None
    return "any", None


def _type_problem(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for a field typed ``hint`` (None when nothing is); NaN and infinities
    are no numbers here (JSON Schema cannot refuse NaN, so this does)."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None:
        return None if type(None) in members else "must be given (null is not allowed)"
    problems = []
    for member in (m for m in members if m is not type(None)):
        kind, item = _kind(member)
        if kind == "any":
            return None
        if kind == "boolean":
            problem = None if isinstance(value, bool) else "must be true or false"
        elif kind in ("number", "integer"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problem = "must be an integer" if kind == "integer" else "must be a number"
            elif not math.isfinite(value):
                problem = "must be a finite number (NaN and infinities are refused)"
            elif kind == "integer" and not isinstance(value, int):
                problem = "must be an integer"
            else:
                problem = None
        elif kind == "string":
            problem = None if isinstance(value, str) else "must be a string"
        elif kind == "mapping":
            problem = None if isinstance(value, Mapping) else "must be a mapping"
        else:  # tuple
            if not isinstance(value, (tuple, list)):
                problem = "must be a list"
            else:
                inner = [_type_problem(v, item) for v in value]
                problem = next((f"each item {p.removeprefix('must be ')}" for p in inner if p), None)
                problem = f"must have {problem}" if problem else None
        if problem is None:
            return None
        problems.append(problem)
    return " or ".join(dict.fromkeys(problems)) + (" (or null)" if type(None) in members else "")


def check_field_types(settings: Any, section: str) -> None:
    """Refuse a field whose value has the wrong type for its annotation, or is NaN or infinite, naming
    ``section.field``. Run first in a settings dataclass's ``__post_init__``, so the range checks after
    it compare numbers."""
    hints = _hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        problem = _type_problem(value, hints[field.name])
        if problem:
            raise SettingError(section, field.name, f"{problem}, got {value!r}")


def settings_from_dict(cls: type[Settings], values: Mapping[str, Any] | None, key: str) -> Settings:
    """A settings dataclass from a config block: defaults overridden by ``values``, lists turned into
    tuples where the default is a tuple (YAML has no tuples), and an unknown key refused with the
    allowed ones, named under ``key`` (e.g. ``aggregate.abmil``). A bad value (the dataclass's own
    checks, raising :class:`SettingError`) is named under ``key`` too."""
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
    try:
        return cls(**values)
    except SettingError as error:
        raise error.under(key) from None


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def requested_targets(argv: Sequence[str]) -> list[str] | None:
    """The targets a Snakemake command line asks for: its target files and rules, and the rule names of
    its ``--target-jobs`` (an empty list: the default target). Snakemake parses the workflow before it
    hands the targets over, so a workflow that plans by target reads them here. None when ``argv`` is
    not a Snakemake command line (the workflow driven through Snakemake's API): assume the default."""
    if not argv or "snakemake" not in os.path.basename(os.path.dirname(argv[0])) + os.path.basename(argv[0]):
        return None
    try:
        from snakemake.cli import get_argument_parser

        args, _ = get_argument_parser().parse_known_args(list(argv[1:]))
    except (ImportError, SystemExit, ValueError):
        return None
    jobs = [str(getattr(spec, "rulename", spec)) for spec in (getattr(args, "target_jobs", None) or [])]
    return [*(str(t) for t in getattr(args, "targets", None) or []), *jobs]
