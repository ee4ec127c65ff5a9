"""Package namespaces that import their modules on first use.

``snakemake`` parses the Snakefile again inside every cluster job, and the Snakefile needs only a few
light names (config dataclasses, metric names). Packages that re-export from modules importing torch,
timm or scikit-learn would make each parse pay seconds for imports it never uses; a lazy namespace keeps
``from magflow.evaluate import rankme`` working while ``import magflow.evaluate.settings`` stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any


class LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their modules when first looked up.

    An export may share its module's name (the function ``rankme`` of ``magflow.evaluate.rankme``): the
    import system binds each submodule it loads as an attribute of its package, which would hide the
    export, so that binding is not stored and the name keeps resolving to the export, as an eager
    ``from .rankme import rankme`` in ``__init__`` would leave it.
    """

    _lazy_exports: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        where = self.__dict__.get("_lazy_exports", {}).get(name)
        if where is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where), name)

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if isinstance(value, types.ModuleType) and exports.get(name) == value.__name__:
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_lazy_exports", {})))


def lazy_namespace(package: str, exports: Mapping[str, Sequence[str]]) -> list[str]:
    """Make ``package`` lazy: each name of ``exports[module]`` comes from ``package.module`` when first
    used. Returns the package's ``__all__``."""
    module = sys.modules[package]
    module.__class__ = LazyPackage
    module.__dict__["_lazy_exports"] = {name: f"{package}.{sub}" for sub, names in exports.items() for name in names}
    return sorted(module.__dict__["_lazy_exports"])
