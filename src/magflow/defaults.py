"""Every config default in one place: the config schema (``workflow/schemas/config.schema.yaml``, shipped
inside the package as ``magflow/config.schema.yaml``).

``default("tissue.mpp")`` is one key's default and ``defaults_of("pretrain.train")`` a block's; the settings
dataclasses take their field defaults from their block with :func:`schema_defaults`, and the command line
takes its defaults from :func:`default`, so no default is written twice. A step into a map of named
entries (``tilesets``, ``benchmarks``, ``embed.external``, ``resources``, ...) is spelled ``<name>`` (any
``<word>`` will do; the docs use the map's own, ``resources.<rule>``): ``default("tilesets.<name>.cell_px")``.

A light module (PyYAML only): the workflow and the command line import it while they parse.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any, TypeVar

import yaml

SCHEMA_FILE = "config.schema.yaml"  # in the package: a link to workflow/schemas/config.schema.yaml
ENTRY = "<name>"  # a key's step into a map of named entries (the schema's additionalProperties)
ENTRY_NAME = "x-entry"  # what a map's entries are called in the docs (<rule> for resources); <name> otherwise
# Annotations of this schema beyond JSON Schema: what applies when a key without a fixed default is left
# out (prose), and the settings dataclass that checks a block again, with messages of its own.
DEFAULT_TEXT = "x-default"
CHECKED_BY = "x-checked-by"
NOTES = "x-notes"
OVERRIDES = "x-overrides"  # a block whose keys are another block's, each replacing that block's value

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader where PyYAML has it: 10x faster

Cls = TypeVar("Cls", bound=type)


def schema_text() -> str:
    """The schema file's text."""
    return resources.files("magflow").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    """The config schema, read once (do not modify it: :func:`default` hands out copies)."""
    return yaml.load(schema_text(), Loader=SAFE_LOADER)


def resolve(node: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``node`` with a local ``$ref`` (``#/$defs/...``) merged in: the node's own keywords win, and its
    ``properties`` are merged per key over those of the reference (so a block can add defaults to
    properties it takes from ``$defs``)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return dict(node)
    target: Any = schema() if root is None else root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = {**resolve(target, root), **{k: v for k, v in node.items() if k != "$ref"}}
    if "properties" in target or "properties" in node:
        base = resolve(target, root).get("properties", {})
        local = node.get("properties", {})
        merged["properties"] = {name: {**base.get(name, {}), **local.get(name, {})}
                                for name in [*base, *(n for n in local if n not in base)]}
    return merged


def entry_schema(node: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The schema of one entry of a map of named entries (``additionalProperties``); a ``null`` entry that
    switches one off (``if: {type: null}``) is left aside: the schema of a given entry is ``else``."""
    extra = node.get("additionalProperties")
    if not isinstance(extra, Mapping):
        return None
    extra = resolve(extra, root)
    return resolve(extra["else"], root) if "else" in extra else extra


def node(key: str) -> dict[str, Any]:
    """The (resolved) schema of a dotted key; ``<name>`` steps into a map's entries. KeyError if none."""
    current = resolve(schema())
    for part in key.split(".") if key else []:
        if part.startswith("<") and part.endswith(">"):  # <name>, or the map's own word (<rule>)
            entry = entry_schema(current)
            if entry is None:
                raise KeyError(f"{key}: no named entries here")
            current = entry
        else:
            current = resolve(current.get("properties", {})[part])
    return current


def default(key: str) -> Any:
    """The schema's default of a dotted key (a fresh copy). KeyError for a key without a fixed default."""
    found = node(key)
    if "default" not in found:
        raise KeyError(f"config key {key} has no fixed default ({found.get(DEFAULT_TEXT, 'required')})")
    return copy.deepcopy(found["default"])


def defaults_of(block: str) -> dict[str, Any]:
    """The defaults of a block's keys (those that have one), as a fresh dict."""
    return {name: copy.deepcopy(sub["default"])
            for name, sub in ((n, resolve(s)) for n, s in node(block).get("properties", {}).items())
            if "default" in sub}


def keys(start: Mapping[str, Any] | None = None, prefix: str = "") -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(dotted key, resolved schema, required) of every key of the schema, parents before children; a map's
    entries are one key spelled ``<name>`` (e.g. ``tilesets.<name>.scales``). The keys of a block of
    overrides (``pretrain.mad.train``) are the other block's, listed there."""
    current = resolve(schema() if start is None else start)
    if OVERRIDES in current:
        return
    required = set(current.get("required", ()))
    for name, sub in current.get("properties", {}).items():
        sub = resolve(sub)
        yield prefix + name, sub, name in required
        yield from keys(sub, f"{prefix}{name}.")
    entry = entry_schema(current)
    if entry is not None and entry.get("properties"):
        yield from keys(entry, f"{prefix}<{current.get(ENTRY_NAME, ENTRY.strip('<>'))}>.")


def schema_defaults(block: str, **names: str) -> Callable[[Cls], Cls]:
    """Give a settings class its field defaults from the schema block ``block``, before ``@dataclass``
    reads them (put this decorator below ``@dataclass``). A field takes the default of the block's key of
    the same name, or of ``names[field]`` (a dotted key inside the block, e.g.
    ``coarse_mpp="hierarchy.coarse_mpp"``); a field that already has a default, or whose key the block
    lacks, is left as it is. Lists become tuples where the field is a tuple (YAML has none), whole numbers
    floats where the field is a float, and mutable defaults a fresh copy per instance."""
    def apply(cls: Cls) -> Cls:
        for field_name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if field_name in cls.__dict__:
                continue
            try:
                value = default(f"{block}.{names.get(field_name, field_name)}")
            except KeyError:
                continue
            if isinstance(value, list) and str(annotation).startswith(("tuple", "Tuple")):
                value = tuple(value)
            elif str(annotation) == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # a whole number in the schema (2048) for a float field
            if isinstance(value, (list, dict)):
                setattr(cls, field_name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, value)))
            else:
                setattr(cls, field_name, value)
        return cls
    return apply
