"""The pretraining sweep: rows of (kernel, strategy, lam, mpp, seed), each tied to a sampler of the sampler sweep.

A row with strategy ``mad`` trains by magnification-aware distillation instead, and one with ``dinov2_mad``
trains the MAD paper's baseline, DINOv2 on the same MAD tile set: they draw no mpps, so they need no
sampler, and their kernel, lam and mpp are NA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from magflow.errors import ConfigError
from magflow.pretrain.mad_config import MAD_STRATEGIES
from magflow.sampling.sweep import SWEEP_COLUMNS, sampler_config
from magflow.sheet_lines import row_lines

RUN_COLUMNS = (*SWEEP_COLUMNS, "seed")
NA = ("", "NA", "<NA>", "nan", "NaN", "None")  # an empty cell as pandas or Paramspace show it


def is_mad(run: Mapping[str, Any]) -> bool:
    """A run on the MAD tile set without a sampler: ``mad``, or its DINOv2-on-the-same-data baseline ``dinov2_mad``."""
    return str(run["strategy"]) in MAD_STRATEGIES


def mad_settings(run: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The MadConfig fields of a MAD-tile-set run: ``settings`` (pretrain.mad, without its tileset and train
    keys) with what the run's strategy fixes on top (:data:`magflow.pretrain.mad_config.MAD_STRATEGIES`)."""
    strategy = str(run["strategy"])
    return {**settings, **MAD_STRATEGIES[strategy], "strategy": strategy}


def match_sampler(run: Mapping[str, Any], samplers: Sequence[Mapping[str, Any]], settings: Mapping[str, Any],
                  where: str) -> int:
    """Index of the sampler sweep row this run trains with; an error naming the run if there is none."""
    wanted = sampler_config(run, settings)
    for index, row in enumerate(samplers):
        if sampler_config(row, settings) == wanted:
            return index
    raise ConfigError(f"{where}: no row of the sampler sweep (samplers.sweep) has kernel={run['kernel']}, "
                      f"strategy={run['strategy']}, lam={run['lam']}, mpp={run['mpp']}; add that sampler to the "
                      "sampler sweep or fix the run row")


def check_runs(runs: Sequence[Mapping[str, Any]], source: str, lines: Sequence[int] | None = None) -> None:
    """Every row of the runs sheet ``source`` before any job; an error names the row by its line in the file.

    ``lines`` are the file's line numbers of ``runs`` (:func:`magflow.sheet_lines.data_lines`); without them
    row i is taken to be line i + 2, below a header on line 1.
    """
    if not runs:
        raise ConfigError(f"pretrain.runs: {source} has no rows; add at least one run")
    missing = [c for c in RUN_COLUMNS if c not in runs[0]]
    if missing:
        raise ConfigError(f"pretrain.runs: {source} lacks the column(s) {missing}; the columns are "
                          f"{', '.join(RUN_COLUMNS)} (NA where unused)")
    for number, run in zip(row_lines(lines, len(runs)), runs):
        try:
            int(run["seed"])
        except (TypeError, ValueError):
            raise ConfigError(f"pretrain.runs: {source}, line {number}: seed must be an integer, got {run['seed']!r}") \
                from None
        if is_mad(run):
            given = [c for c in ("kernel", "lam", "mpp") if run[c] is not None and str(run[c]).strip() not in NA]
            if given:
                raise ConfigError(f"pretrain.runs: {source}, line {number}: a mad run uses no sampler; set {given} "
                                  "to NA (MAD's settings are pretrain.mad)")
