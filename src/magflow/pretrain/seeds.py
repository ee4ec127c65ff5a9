"""Every random draw of a training iteration comes from seeds derived from (seed, rank, iteration).

Streams are ``np.random.SeedSequence([seed, rank, iteration, stream])``: independent across ranks
(no collision like seed + rank would give between seed 0 rank 1 and seed 1 rank 0), across
iterations and across uses. Because nothing is carried from one iteration to the next, a run resumed
at iteration i replays exactly what an uninterrupted run does there, with no generator state to save.
"""

from __future__ import annotations

import random

import numpy as np
import torch

STREAMS = {"data": 0, "views": 1, "masks": 2, "global": 3}


def stream(seed: int, rank: int, iteration: int, name: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, rank, iteration, STREAMS[name]])


def numpy_rng(seed: int, rank: int, iteration: int, name: str) -> np.random.Generator:
    return np.random.default_rng(stream(seed, rank, iteration, name))


def torch_generator(seed: int, rank: int, iteration: int, name: str) -> torch.Generator:
    """A CPU generator (draws stay identical whatever device the work runs on)."""
    return torch.Generator().manual_seed(int(stream(seed, rank, iteration, name).generate_state(1, np.uint64)[0]))


def seed_globals(seed: int, rank: int, iteration: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (drop path uses torch's, on every device)."""
    state = stream(seed, rank, iteration, "global").generate_state(3, np.uint32)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[2]))
