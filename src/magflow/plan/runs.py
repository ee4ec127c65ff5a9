"""The magnification samplers and the pretraining runs of a workflow, from their sweep sheets.

A sheet row's name is Snakemake's ``Paramspace`` name of it (``column~value``, NA for an empty cell): the
folder names under results/samplers and results/models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from snakemake.utils import Paramspace

from magflow.plan.slides import require_tileset
from magflow.pretrain.mad_config import check_mad_runs
from magflow.pretrain.runs import RUN_COLUMNS, check_runs, is_mad, mad_settings, match_sampler
from magflow.pretrain.train_config import TrainConfig, check_run_columns
from magflow.sampling.sampler import SamplerConfig
from magflow.sampling.sweep import SWEEP_COLUMNS, check_sweep, sampler_config
from magflow.sheet_lines import data_lines, row_lines

SAMPLER_FILENAME_COLUMNS = ("strategy", "lam", "mpp")  # the other columns (kernel) are folders


def instance_names(frame: pd.DataFrame, filename_columns: Sequence[str] | None = None) -> list[str]:
    """Each row's name as Snakemake's Paramspace gives it (``column~value``, NA when empty): the columns not in
    ``filename_columns`` as folders, then ``filename_columns`` (all when None) joined by ``_``."""
    space = Paramspace(frame, filename_params=list(filename_columns) if filename_columns is not None else "*")
    return list(space.instance_patterns)


def read_sweep(path: str) -> tuple[pd.DataFrame, Sequence[int]]:
    """A sweep sheet and its rows' line numbers in the file (errors name a row by its line)."""
    frame = pd.read_csv(path, sep="\t", comment="#")
    return frame, row_lines(data_lines(path), len(frame))


@dataclass(frozen=True)
class Sampler:
    row: Mapping[str, Any]   # the sweep's row
    config: SamplerConfig

    @property
    def kernel(self) -> str:
        return str(self.row["kernel"])


@dataclass(frozen=True)
class Run:
    """One pretraining run: its seed, training settings and tile set; a sampler or MAD settings."""

    seed: int
    train: Mapping[str, Any]
    tileset: str
    sampler: str | None = None              # the sampler sweep row it trains with (None: a MAD run)
    mad: Mapping[str, Any] | None = None    # the MadConfig fields of a `mad` or `dinov2_mad` run


@dataclass(frozen=True)
class RunPlan:
    samplers: dict[str, Sampler]   # name -> sampler, in the sweep's order
    runs: dict[str, Run]           # name -> run, in the runs sheet's order

    def sampler_names(self, kernel: str | None = None) -> list[str]:
        """The samplers of the sweep, all or those of one kernel."""
        return [name for name, s in self.samplers.items() if kernel is None or s.kernel == kernel]

    def kernels(self) -> list[str]:
        return list(dict.fromkeys(s.kernel for s in self.samplers.values()))

    def mad_runs(self) -> list[str]:
        return [name for name, run in self.runs.items() if run.mad is not None]


def plan_samplers(settings: Mapping[str, Any]) -> dict[str, Sampler]:
    """One sampler per row of samplers.sweep, checked before any job."""
    frame, lines = read_sweep(settings["sweep"])
    rows = frame.to_dict("records")
    check_sweep(rows, settings, source=settings["sweep"], lines=lines)
    names = instance_names(frame[list(SWEEP_COLUMNS)], SAMPLER_FILENAME_COLUMNS)
    return {name: Sampler(row, sampler_config(row, settings)) for name, row in zip(names, rows)}


def plan_runs(config: Mapping[str, Any]) -> RunPlan:
    """The samplers, and one run per row of pretrain.runs (strategy x seed): `mad` and `dinov2_mad` rows
    train on the pretrain.mad tile set without a sampler, the others on pretrain.tileset with theirs."""
    samplers = plan_samplers(config["samplers"])
    pretrain = config["pretrain"]
    train = TrainConfig.from_config(pretrain["train"])  # unknown or out-of-range keys stop the run, each named
    tileset = require_tileset(config, "pretrain.tileset")
    frame, lines = read_sweep(pretrain["runs"])
    rows = frame.to_dict("records")
    check_runs(rows, source=pretrain["runs"], lines=lines)
    names = instance_names(frame[list(RUN_COLUMNS)])
    check_run_columns(train, dict(zip(names, rows)), pretrain["runs"], lines=lines)
    mad = dict(pretrain["mad"])
    mad_tileset = mad.pop("tileset")
    mad_overrides = mad.pop("train")
    mad_train = {**pretrain["train"], **mad_overrides}  # whole keys of pretrain.train replaced
    sampler_names, sampler_rows = list(samplers), [s.row for s in samplers.values()]
    runs = {}
    for line, name, row in zip(lines, names, rows):
        if is_mad(row):
            runs[name] = Run(int(row["seed"]), mad_train, mad_tileset, mad=mad_settings(row, mad))
        else:
            index = match_sampler(row, sampler_rows, config["samplers"], f"{pretrain['runs']}, line {line}")
            runs[name] = Run(int(row["seed"]), pretrain["train"], tileset, sampler=sampler_names[index])
    if any(is_mad(row) for row in rows):  # unknown or invalid MAD keys, and their training settings
        check_mad_runs(mad, pretrain["train"], mad_overrides, config["tilesets"], mad_tileset)
    return RunPlan(samplers, runs)

