"""Settings of magnification-aware distillation (MAD), the ``mad`` pretraining strategy.

MAD trains on a nested tile set (``tilesets.mad``: 4.0 / 1.0 / 0.25 mpp = 2.5× / 10× / 40×). Its
transitions are the consecutive pairs of the tile set's scales, coarsest first (2.5×→10×, 10×→40×).
A run with these settings draws no mpps from a sampler: magnification comes from the tile set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from magflow.config import SettingError, check_field_types, requirement, settings_from_dict
from magflow.defaults import schema_defaults
from magflow.errors import ConfigError
from magflow.pretrain.train_config import TrainConfig

KEY = "pretrain.mad"
# The runs sheet's strategies that train on the MAD tile set without a sampler, and what each sets on top of
# pretrain.mad: ``dinov2_mad`` is the MAD paper's baseline, DINOv2 trained on the same data — every item a
# standalone tile of a uniformly drawn scale with DINOv2's multi-crop views and DINOv2's full objective
# (DINO + iBOT + KoLeo), on MAD's backbone, batch and schedule.
MAD_STRATEGIES: dict[str, dict[str, Any]] = {"mad": {}, "dinov2_mad": {"standalone_p": 1.0, "ibot": True}}


@dataclass(frozen=True)
@schema_defaults("pretrain.mad")
class MadConfig:
    """Defaults follow the MAD paper where it is explicit (4 children, DINO cross-entropy only); they are the
    config schema's (``pretrain.mad``)."""

    transition_weights: tuple[float, ...]  # per transition, coarsest first; normalised
    standalone_p: float           # chance that an item is one standalone tile with DINOv2 multi-crop views
    children: int                 # aligned children per item, the student's local views
    ibot: bool                    # iBOT on MAD's global views (the paper: DINO cross-entropy only)
    strategy: str = "mad"         # set from the runs sheet: mad, or dinov2_mad (the DINOv2-on-the-same-data baseline)

    def __post_init__(self) -> None:
        check_field_types(self, KEY)
        if self.strategy not in MAD_STRATEGIES:
            raise SettingError(KEY, "strategy", f"must be one of {', '.join(MAD_STRATEGIES)}, got {self.strategy!r}")
        for key, value in MAD_STRATEGIES[self.strategy].items():
            if getattr(self, key) != value:
                raise SettingError(KEY, key, f"is {value} for strategy {self.strategy} (got {getattr(self, key)}); "
                                   "the runs sheet's strategy sets it")
        weights = self.transition_weights
        if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
            raise SettingError(KEY, "transition_weights", "one weight >= 0 per transition (coarsest first, e.g. "
                               f"[0.5, 0.5] for 2.5x→10x and 10x→40x) with a positive sum, got {list(weights)}")
        need = requirement(self, KEY)
        need(0.0 <= self.standalone_p <= 1.0, "standalone_p", "must be a probability in [0, 1]")
        need(self.children >= 1, "children", "must be at least 1 child per item")

    def validate(self, tileset: Mapping[str, Any], tileset_key: str, train: TrainConfig,
                 train_key: Callable[[str], str]) -> MadConfig:
        """The rules between these settings, the MAD tile set (``tileset``, the config block named
        ``tileset_key``) and the runs' training settings (``train``, each field named by ``train_key``),
        checked by the workflow before any job: one weight per transition, no more children than a parent
        has, and views that are whole cells never upsampled (local_size <= global_size <= cell_px).
        Returns ``self``."""
        scales = sorted((float(s) for s in tileset.get("scales", [])), reverse=True)
        pairs = list(zip(scales[:-1], scales[1:]))
        if len(self.transition_weights) != len(pairs):
            names = ", ".join(f"{c:g}>{f:g} mpp" for c, f in pairs) or "none (one scale)"
            raise ConfigError(f"{KEY}.transition_weights: {len(self.transition_weights)} weight(s) for the "
                              f"{len(pairs)} transition(s) of {tileset_key}.scales {scales} ({names}); give one "
                              "weight per transition")
        for coarse, fine in pairs:
            ratio = coarse / fine
            kids = round(ratio) ** 2  # a nested tile set: ratio x ratio children under each parent
            if abs(ratio - round(ratio)) < 1e-6 and self.children > kids:
                raise ConfigError(f"{KEY}.children: {self.children} children per item, but a {coarse:g} mpp tile "
                                  f"of {tileset_key} has only {kids} at {fine:g} mpp")
        cell_px = int(tileset.get("cell_px", 224))
        if train.global_size > cell_px:
            raise ConfigError(f"{train_key('global_size')}: {train.global_size} px is more than {tileset_key}.cell_px "
                              f"{cell_px}; MAD's views are whole cells, never upsampled")
        if train.local_size > train.global_size:
            raise ConfigError(f"{train_key('local_size')}: {train.local_size} px is more than global_size "
                              f"{train.global_size}; MAD's standalone locals are windows of the global view")
        return self

    @classmethod
    def for_strategy(cls, strategy: str, values: Mapping[str, Any]) -> MadConfig:
        """The settings of a run whose runs-sheet strategy is ``strategy``: ``values`` (pretrain.mad) with
        what the strategy fixes on top (:data:`MAD_STRATEGIES`)."""
        if strategy not in MAD_STRATEGIES:
            raise ConfigError(f"strategy {strategy!r} is not one of the MAD tile set's strategies "
                              f"({', '.join(MAD_STRATEGIES)})")
        return cls.from_dict({**values, **MAD_STRATEGIES[strategy], "strategy": strategy})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MadConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        return settings_from_dict(cls, values, KEY)

    def probabilities(self) -> list[float]:
        total = sum(self.transition_weights)
        return [w / total for w in self.transition_weights]


def check_mad_runs(settings: Mapping[str, Any], train: Mapping[str, Any], overrides: Mapping[str, Any],
                   tilesets: Mapping[str, Mapping[str, Any]], tileset: str) -> None:
    """The workflow's check of the ``mad`` runs before any job: ``pretrain.mad`` (``settings``, without
    its ``tileset`` and ``train`` keys), the training settings they run with (``pretrain.train``, whole
    keys replaced by ``pretrain.mad.train``: ``overrides``), and both against the MAD tile set. A bad
    training value is named where it was set."""
    if tileset not in tilesets:
        raise ConfigError(f"{KEY}.tileset: '{tileset}' is not a tile set; tilesets: {', '.join(tilesets)}")

    def train_key(name: str) -> str:
        return f"{KEY}.train.{name}" if name in overrides else f"pretrain.train.{name} (for the mad runs)"

    try:
        config = TrainConfig.from_dict({**train, **overrides}, f"{KEY}.train").validate(f"{KEY}.train")
    except SettingError as error:
        raise error.reworded(train_key(error.name)) from None
    MadConfig.from_dict(settings).validate(tilesets[tileset], f"tilesets.{tileset}", config, train_key)
