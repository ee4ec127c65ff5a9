"""Settings of magnification-aware distillation (MAD), the ``mad`` pretraining strategy.

MAD trains on a nested tile set (``tilesets.mad``: 4.0 / 1.0 / 0.25 mpp = 2.5× / 10× / 40×). Its
transitions are the consecutive pairs of the tile set's scales, coarsest first (2.5×→10×, 10×→40×).
A run with these settings draws no mpps from a sampler: magnification comes from the tile set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from magflow.config import settings_from_dict
from magflow.errors import ConfigError

KEY = "pretrain.mad"


@dataclass(frozen=True)
class MadConfig:
    """Defaults follow the MAD paper where it is explicit (4 children, DINO cross-entropy only)."""

    transition_weights: tuple[float, ...] = (0.5, 0.5)  # per transition, coarsest first; normalised
    standalone_p: float = 0.1     # chance that an item is one standalone tile with DINOv2 multi-crop views
    children: int = 4             # aligned children per item, the student's local views
    ibot: bool = False            # iBOT on MAD's global views (the paper: DINO cross-entropy only)

    def __post_init__(self) -> None:
        weights = self.transition_weights
        if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"{KEY}.transition_weights: one weight >= 0 per transition (coarsest first, "
                              f"e.g. [0.5, 0.5] for 2.5x→10x and 10x→40x) with a positive sum, got {list(weights)}")
        if not 0.0 <= self.standalone_p <= 1.0:
            raise ConfigError(f"{KEY}.standalone_p: a probability in [0, 1], got {self.standalone_p!r}")
        if self.children < 1:
            raise ConfigError(f"{KEY}.children: at least 1 child per item, got {self.children!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MadConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        return settings_from_dict(cls, values, KEY)

    def probabilities(self) -> list[float]:
        total = sum(self.transition_weights)
        return [w / total for w in self.transition_weights]
