"""Region aggregation of a workflow: the frozen tile encoder, the mixer runs (objective x r x c), the AB-MIL
methods and tasks, and the slides each uses."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from magflow.aggregate.methods import MIXER_COLUMNS, SlideMethod, check_mixer_runs, slide_methods
from magflow.aggregate.settings import MILConfig, aggregation_wanted, check_mixer_sweep, check_tasks
from magflow.errors import ConfigError
from magflow.plan.runs import instance_names, read_sweep
from magflow.plan.slides import SlidePlan, require_tileset


@dataclass(frozen=True)
class AggregatePlan:
    """None and empty where the requested targets need no aggregation (its settings then go unchecked)."""

    encoder: str | None = None
    scales: list[float] = field(default_factory=list)             # the region tile set's, coarsest first
    mixer_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> objective, mask_ratio, context
    methods: dict[str, SlideMethod] = field(default_factory=dict)  # the AUROC table's rows
    tasks: list[str] = field(default_factory=list)                 # its columns: slide sheet columns

    def labelled_slides(self, slides: SlidePlan) -> list[str]:
        """Slides with a value in any task's column."""
        return [e.slide_id for e in slides.entries if any(e.value(task) is not None for task in self.tasks)]


def plan_aggregate(config: Mapping[str, Any], slides: SlidePlan, embed_models: Sequence[str],
                   targets: Sequence[str] | None) -> AggregatePlan:
    """aggregate.* checked before any job, when ``targets`` (a Snakemake command line's; None: the default)
    need aggregation; an unknown or out-of-range key is named by key or by the sweep's line and column."""
    settings = config["aggregate"]
    encoder = settings["encoder"]
    if not aggregation_wanted(encoder, targets):
        return AggregatePlan()
    if encoder not in embed_models:
        raise ConfigError(f"aggregate.encoder: '{encoder}' is neither a pretraining run nor an embed.external "
                          f"baseline; choose one of: {', '.join(embed_models)}, or set aggregate.encoder: null (no aggregation)")
    tileset = require_tileset(config, "aggregate.tileset")
    scales = sorted(config["tilesets"][tileset]["scales"], reverse=True)
    if config["tilesets"][tileset].get("max_tiles_per_scale") is not None:
        raise ConfigError(f"tilesets.{tileset}.max_tiles_per_scale: the region tile set must keep every "
                          "tissue tile (null), or regions miss tiles; use another tile set for aggregate.tileset")
    if not os.path.isfile(settings["runs"]):
        raise ConfigError(f"aggregate.runs: {settings['runs']} does not exist; write the mixer sweep there (columns "
                          "objective, mask_ratio, context), point aggregate.runs at it, or set aggregate.encoder: null")
    frame, lines = read_sweep(settings["runs"])
    names = instance_names(frame[list(MIXER_COLUMNS)])
    mixer_runs = check_mixer_runs(dict(zip(names, frame.to_dict("records"))), settings["runs"], lines=lines)
    check_mixer_sweep(settings["pretrain"], mixer_runs, settings["runs"], settings["t"], scales, lines=lines)
    MILConfig.from_config(settings["abmil"])
    methods = slide_methods(mixer_runs, settings["modes"], scales)
    tasks = check_tasks(settings["tasks"], slides.by_id, config["slides"])
    return AggregatePlan(encoder, scales, mixer_runs, methods, tasks)
