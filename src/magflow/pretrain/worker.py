"""Pretraining from a run config, on one process or under torchrun (one process per GPU of one node).

    python -m magflow.pretrain.worker --config run.yaml
    torchrun --standalone --nproc_per_node=4 -m magflow.pretrain.worker --config run.yaml

The run config is YAML or JSON::

    stores: [results/tiles/train/slide_a.h5, results/tiles/train/slide_b.h5]
    sampler: results/samplers/kernel~abs/strategy~cu_lam~NA_mpp~NA.json   # or inline: {strategy: cu}
    out_dir: results/pretrain/cu
    train: {batch_size: 64, iterations: 125000}   # TrainConfig fields; the rest keep their defaults

A MAD run (magnification-aware distillation) names the MAD tile set's stores and gives ``mad``
(MadConfig fields, ``{}`` for the defaults) instead of ``sampler``::

    stores: [results/tiles/mad/slide_a.h5, results/tiles/mad/slide_b.h5]
    mad: {transition_weights: [0.5, 0.5], standalone_p: 0.1}
    out_dir: results/models/mad

``--stores``, ``--sampler`` and ``--out-dir`` override the file's values (``--config`` may then be
left out). Re-running the same command resumes from ``out_dir/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from magflow.errors import ConfigError, MagflowError
from magflow.logs import log_to_file
from magflow.pretrain.mad_config import MadConfig
from magflow.pretrain.trainer import TrainConfig, TrainResult, train
from magflow.sampling.record import read_sampler
from magflow.sampling.sampler import Sampler, SamplerConfig, build_sampler

RUN_KEYS = ("stores", "sampler", "mad", "out_dir", "train")


def load_sampler(value: str | Mapping[str, Any]) -> Sampler:
    """A sampler JSON written by the sampler rule, or a SamplerConfig mapping solved here."""
    if isinstance(value, Mapping):
        if "du_mpps" in value:
            value = {**value, "du_mpps": tuple(value["du_mpps"])}
        return build_sampler(SamplerConfig(**value))
    if not Path(value).is_file():
        raise ConfigError(f"sampler {value} does not exist; run the sampler rule first or fix the path")
    return read_sampler(value)


def read_run_config(path: str | Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run config file (if any) with the non-empty ``overrides`` applied; every key is checked."""
    run: dict[str, Any] = {}
    if path is not None:
        with open(path) as handle:
            run = yaml.safe_load(handle) or {}  # JSON is YAML
        if not isinstance(run, dict):
            raise ConfigError(f"{path}: a run config is a mapping with keys {', '.join(RUN_KEYS)}")
    run.update({key: value for key, value in overrides.items() if value})
    unknown = sorted(set(run) - set(RUN_KEYS))
    missing = [key for key in ("stores", "out_dir") if not run.get(key)]
    if run.get("sampler") and "mad" in run:
        raise ConfigError(f"run config {path or '(command line)'} gives both sampler and mad; a run is either "
                          "DINOv2 with a magnification sampler or MAD: keep one")
    if not run.get("sampler") and "mad" not in run:  # MAD settings may be {} (the defaults)
        missing.append("sampler")
    if unknown or missing:
        raise ConfigError(f"run config {path or '(command line)'}: unknown keys {unknown}, missing keys {missing}; "
                          f"the keys are {', '.join(RUN_KEYS)} (train is optional; a MAD run gives mad instead of "
                          "sampler)")
    return run


def run(run_config: Mapping[str, Any], *, stop_at: int | None = None, progress: bool = True,
        device: str | None = None) -> TrainResult:
    stores = run_config["stores"]
    strategy = MadConfig.from_dict(run_config["mad"] or {}) if "mad" in run_config else \
        load_sampler(run_config["sampler"])
    return train(TrainConfig.from_dict(run_config.get("train") or {}), [stores] if isinstance(stores, str) else stores,
                 strategy, run_config["out_dir"], stop_at=stop_at, progress=progress, device=device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magflow.pretrain.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run config, YAML or JSON")
    parser.add_argument("--stores", nargs="+", help="train tile stores (override the config's)")
    parser.add_argument("--sampler", help="sampler JSON (overrides the config's)")
    parser.add_argument("--out-dir", help="output folder (overrides the config's)")
    parser.add_argument("--stop-at", type=int, help="stop at this iteration with a checkpoint; rerun to resume")
    parser.add_argument("--device", help="e.g. cpu; default: this process's GPU (LOCAL_RANK) if any, else cpu")
    parser.add_argument("--log-file", help="also write the log to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_file(args.log_file if os.environ.get("RANK", "0") == "0" else None)  # one writer per log file
    try:
        run_config = read_run_config(args.config, {"stores": args.stores, "sampler": args.sampler,
                                                   "out_dir": args.out_dir})
        result = run(run_config, stop_at=args.stop_at, progress=not args.no_progress, device=args.device)
    except MagflowError as error:
        logging.getLogger("magflow").error("pretraining failed: %s", error)
        return 2
    if result.weights is not None:
        print(json.dumps({"weights": str(result.weights), "model_card": str(result.model_card)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
