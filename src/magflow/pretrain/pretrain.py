"""The `pretrain` step: one run (strategy × seed) on its tile stores, on 1 device or with torchrun."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from magflow.atomic import atomic_path

log = logging.getLogger(__name__)


def launch_pretraining(stores: Sequence[str | os.PathLike[str]], sampler: str | os.PathLike[str] | None,
                       out_dir: str | os.PathLike[str], train: Mapping[str, Any], seed: int, gpus: int = 0,
                       log_file: str | os.PathLike[str] | None = None, mad: Mapping[str, Any] | None = None) -> Path:
    """Train one run: with a ``sampler`` JSON, DINOv2 with magnification sampling; with ``mad`` settings
    (``MadConfig`` fields) and no sampler, MAD. With ``gpus`` > 1 the job runs ``torchrun
    --nproc_per_node=gpus`` (DDP, NCCL); otherwise it trains in this process (one GPU if visible, else
    CPU). Returns the run config path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strategy = {"mad": dict(mad)} if mad is not None else {"sampler": str(sampler)}
    run_config = {"stores": [str(s) for s in stores], **strategy, "out_dir": str(out),
                  "train": {**dict(train), "seed": int(seed)}}
    config_path = out / "run.yaml"
    with atomic_path(config_path) as tmp:
        tmp.write_text(yaml.safe_dump(run_config, sort_keys=False))
    if gpus > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                   "-m", "magflow.pretrain.worker", "--config", str(config_path), "--no-progress"]
        if log_file:
            command += ["--log-file", str(log_file)]
        log.info("launching %s", " ".join(command))
        subprocess.run(command, check=True)
    else:
        from magflow.pretrain.worker import run

        run(run_config)
    return config_path
