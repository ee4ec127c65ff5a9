"""The workflow's plan: every decision the Snakefile needs, made once from the validated config and the slide
sheet (which slides, runs, models, evaluations, benchmarks and aggregation methods exist, and what each
uses). Every check here stops a run before any job; nothing here imports torch or scikit-learn, since the
Snakefile is parsed again in every cluster job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magflow.benchmark.config import BenchmarkSpec, benchmark_specs
from magflow.errors import ConfigError
from magflow.evaluate.settings import EvalSettings
from magflow.plan.aggregate import AggregatePlan, plan_aggregate
from magflow.plan.models import MadPlan, ModelPlan, plan_mad, plan_models, resample_warning
from magflow.plan.runs import RunPlan, plan_runs
from magflow.plan.slides import SlidePlan, read_slides, require_tileset

__all__ = ["Plan", "build_plan", "require_tileset", "rule_resources"]


@dataclass(frozen=True)
class Plan:
    """Every decision of one invocation of the workflow."""

    slides: SlidePlan
    runs: RunPlan
    models: ModelPlan
    benchmarks: dict[str, BenchmarkSpec]
    mad: MadPlan
    aggregate: AggregatePlan
    warnings: list[str]   # what the user should know before the run (e.g. mpps that embedding will skip)


def build_plan(config: Mapping[str, Any], targets: Sequence[str] | None = None) -> Plan:
    """The plan of a validated ``config`` for the Snakemake ``targets`` (None: the default target)."""
    slides = read_slides(config)
    runs = plan_runs(config)
    models = plan_models(config, list(runs.runs))
    warning = resample_warning(config)
    # benchmark folders checked before any job (a fixture's folder is written by its rule, so not checked)
    benchmarks = benchmark_specs(config["benchmarks"], check_paths=True)
    EvalSettings.from_config(config["evaluate"])  # invalid evaluation settings stop the run before any job
    mad = plan_mad(config, models, runs.mad_runs(), slides.masks())
    aggregate = plan_aggregate(config, slides, models.embed_models, targets)
    return Plan(slides, runs, models, benchmarks, mad, aggregate, [warning] if warning else [])


def rule_resources(resources: Mapping[str, Mapping[str, Any]], key: str, **fixed: Any) -> dict[str, Any]:
    """The cluster resources of a rule: the entry ``key`` of config ``resources`` (the rule's name, or
    ``evaluate`` for every evaluation job) and ``fixed``, the values that the rule's own settings decide (a GPU
    count its command also uses), which an entry may not contradict. Keys left out come from the profile's
    default-resources; CPUs come from the rule's threads."""
    chosen = dict(resources.get(key, {}))
    for name, value in fixed.items():
        if chosen.setdefault(name, value) != value:
            raise ConfigError(f"config key 'resources.{key}.{name}': {chosen[name]!r} contradicts {value!r} "
                              f"set by the rule's own settings; remove it from resources.{key}.")
    return chosen
