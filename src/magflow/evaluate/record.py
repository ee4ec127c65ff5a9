"""One metric record per model and metric family, ``results/eval/{model}/{metric}.json``, written atomically,
and what a metric function returns (:class:`MetricResult`) or raises when it cannot run (:class:`MetricSkipped`).

Every record has the same envelope: ``metric``, ``model``, ``protocol`` (``magflow`` or ``cms``, see
``magflow.evaluate.settings.PROTOCOLS``), ``status`` (``ok`` or ``skipped``),
``reason`` (why it was skipped, else empty), ``n_tiles``, ``seeds``, ``constants`` (every constant
the metric used), ``result`` (the metric's own content; empty when skipped), ``embeddings`` (what
was evaluated, see :meth:`EvalData.summary`) and ``provenance`` (config, versions, commit). NaN and
infinite numbers are written as ``null`` so the file is strict JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magflow import provenance
from magflow.atomic import atomic_path

if TYPE_CHECKING:  # data.py raises MetricSkipped, so this module does not import it at run time
    from magflow.evaluate.data import EvalData

OK = "ok"
DEFAULT_PROTOCOL = "magflow"  # the first of magflow.evaluate.settings.PROTOCOLS
SKIPPED = "skipped"


class MetricSkipped(Exception):
    """A metric cannot be computed on these embeddings; the message says why and is recorded."""


@dataclass(frozen=True)
class MetricResult:
    """What a metric function returns: the record's ``result``, ``seeds`` and ``constants``."""

    result: Mapping[str, Any]
    seeds: Any = field(default_factory=list)
    constants: Mapping[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """JSON-ready: dataclasses and numpy values to plain types, NaN and ±inf to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)]
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def make_record(metric: str, data: EvalData, result: Mapping[str, Any] | None = None, *, reason: str = "",
                seeds: Any = None, constants: Mapping[str, Any] | None = None,
                config: Mapping[str, Any] | None = None, protocol: str = DEFAULT_PROTOCOL) -> dict[str, Any]:
    """The record envelope; status ``skipped`` when ``reason`` is given."""
    return plain({
        "metric": metric, "model": data.model, "protocol": protocol, "status": SKIPPED if reason else OK, "reason": reason,
        "n_tiles": data.n, "seeds": seeds if seeds is not None else [], "constants": dict(constants or {}),
        "result": dict(result or {}) if not reason else {}, "embeddings": data.summary(),
        "provenance": provenance.collect(config=config, precision="float64"),
    })


def write_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plain(record), indent=1, allow_nan=False) + "\n")
    return Path(path)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
