"""The JSON record of a solved sampler (``results/samplers/{name}.json``), written atomically."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from magflow import provenance
from magflow.atomic import atomic_path
from magflow.sampling.distributions import MppDistribution
from magflow.sampling.sampler import Sampler, SamplerConfig

DRAW_RULE = (
    "pick i with probability p[i], then draw uniformly on [cell_lo[i], cell_hi[i]]; "
    "atoms (cell_lo == cell_hi) are returned exactly. I(y) = sum_i p[i] K(support[i], y)."
)


def to_record(sampler: Sampler) -> dict[str, Any]:
    """Everything needed to reproduce, draw from and plot the sampler, as plain JSON types."""
    cfg, dist = sampler.config, sampler.distribution
    return {
        "strategy": cfg.strategy,
        "kernel": cfg.kernel,
        "lam": cfg.effective_lam,
        "mpp": cfg.mpp if cfg.strategy == "single" else None,
        "du_mpps": list(cfg.du_mpps) if cfg.strategy == "du" else None,
        "range": [cfg.lo, cfg.hi],
        "grid_step": cfg.grid_step,
        "grid": sampler.grid.tolist(),
        "support": dist.support.tolist(),
        "p": dist.mass.tolist(),
        "atoms": dist.atoms.tolist(),
        "cell_lo": dist.cell_lo.tolist(),
        "cell_hi": dist.cell_hi.tolist(),
        "draw": DRAW_RULE,
        "I": sampler.quality.tolist(),
        "min_I": sampler.min_quality,
        "mean_I": sampler.mean_quality,
        "solver": sampler.solver,
        "provenance": provenance.collect(precision="float64"),
    }


def from_record(record: dict[str, Any]) -> Sampler:
    """Rebuild a :class:`Sampler` from :func:`to_record` output (no re-solving)."""
    lo, hi = record["range"]
    cfg = SamplerConfig(
        strategy=record["strategy"],
        kernel=record["kernel"],
        lam=record["lam"],
        mpp=record["mpp"],
        lo=lo,
        hi=hi,
        grid_step=record["grid_step"],
        **({"du_mpps": tuple(record["du_mpps"])} if record["du_mpps"] is not None else {}),
    )
    dist = MppDistribution(
        np.asarray(record["support"], dtype=np.float64),
        np.asarray(record["p"], dtype=np.float64),
        np.asarray(record["cell_lo"], dtype=np.float64),
        np.asarray(record["cell_hi"], dtype=np.float64),
    )
    grid = np.asarray(record["grid"], dtype=np.float64)
    quality = np.asarray(record["I"], dtype=np.float64)
    return Sampler(cfg, dist, grid, quality, record["solver"])


def write_sampler(sampler: Sampler, path: str | os.PathLike[str]) -> None:
    """Write the record to ``path`` via a temporary file, so no partial JSON is ever left."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_record(sampler), indent=1) + "\n")


def read_sampler(path: str | os.PathLike[str]) -> Sampler:
    """Read a sampler JSON written by :func:`write_sampler`."""
    with open(path) as f:
        return from_record(json.load(f))
