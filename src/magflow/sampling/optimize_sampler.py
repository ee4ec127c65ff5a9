"""Workflow entry point: build one configured sampler and write its JSON record."""

from __future__ import annotations

import os

from magflow.sampling.record import write_sampler
from magflow.sampling.sampler import Sampler, SamplerConfig, build_sampler


def optimize_sampler(cfg: SamplerConfig, out: str | os.PathLike[str]) -> Sampler:
    """Solve the sampler of ``cfg`` (an LP for cu_minmax) and write ``out`` atomically."""
    sampler = build_sampler(cfg)
    write_sampler(sampler, out)
    return sampler
