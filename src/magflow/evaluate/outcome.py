"""What a metric function returns, or raises when the metric cannot be computed on an embeddings file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class MetricSkipped(Exception):
    """A metric cannot be computed on these embeddings; the message says why and is recorded."""


@dataclass(frozen=True)
class MetricResult:
    result: Mapping[str, Any]
    seeds: Any = field(default_factory=list)
    constants: Mapping[str, Any] = field(default_factory=dict)
