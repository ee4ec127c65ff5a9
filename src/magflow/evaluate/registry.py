"""The metric families: one evaluation job and one record each, listed once for the workflow, the CLI and the report.

A light module (no numpy, scikit-learn or torch): the workflow reads it on every parse. Each family
names the function that computes it as ``"module:function"`` under ``magflow.evaluate``, imported
only when a record is computed (:func:`metric_function`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricFamily:
    name: str               # the record results/eval/{model}/{name}.json and the CLI's --metrics choice
    compute: str            # "module:function" under magflow.evaluate: (EvalData, EvalContext) -> MetricResult
    masks: bool = False     # reads the slides' label masks and writes a maps folder results/eval/{model}/{name}
    control: bool = False   # a run's control ({run}~init) gets this record too
    protocol: bool = False  # evaluate.protocol changes how it is computed (else its records say "magflow")


FAMILIES: tuple[MetricFamily, ...] = (
    MetricFamily("rankme", "rankme:rankme_profile", control=True),
    MetricFamily("probes", "probes:probes", control=True, protocol=True),
    MetricFamily("cross_mpp", "cross_mpp:cross_mpp"),
    MetricFamily("clustering", "clustering:clustering"),
    MetricFamily("centroids", "centroids:centroid_profile"),
    MetricFamily("consistency", "consistency:consistency"),
    MetricFamily("segmentation", "segmentation:segmentation", masks=True),
    MetricFamily("robustness", "robustness:robustness_metric", control=True),
)
METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)
CONTROL_METRICS: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.control)
PLAIN_METRICS: tuple[str, ...] = tuple(f.name for f in FAMILIES if not f.masks)  # the embeddings are all they read
MASK_METRICS: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.masks)


def family(metric: str) -> MetricFamily:
    """The family named ``metric``; an unknown name is an error that lists the known ones."""
    for f in FAMILIES:
        if f.name == metric:
            return f
    raise ValueError(f"unknown metric '{metric}'; known: {', '.join(METRIC_NAMES)}")


def metric_function(metric: str) -> Callable[..., Any]:
    """The function that computes ``metric``, imported now."""
    module, function = family(metric).compute.split(":")
    return getattr(importlib.import_module(f"magflow.evaluate.{module}"), function)
