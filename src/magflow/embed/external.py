"""External baselines as config: a timm architecture name, its keyword arguments and a local weights file.

Parsing and checking them needs neither torch nor timm, so the workflow refuses a baseline without
local weights while it parses the config, before any job (see :mod:`magflow.embed.encoder` for building
the model).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from magflow.embed.control import CONTROL_KEY, InitControl
from magflow.errors import ConfigError
from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ExternalModel:
    """A timm architecture with local weights, e.g. ``ExternalModel("uni", "vit_large_patch16_224",
    "weights/uni.bin", timm_kwargs={"init_values": 1e-5})``."""

    name: str
    timm_name: str
    weights: str | None = None
    img_size: int = 224
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    @classmethod
    def from_config(cls, name: str, settings: Mapping[str, Any]) -> ExternalModel:
        known = {"timm_name", "weights", "img_size", "timm_kwargs", "mean", "std"}
        unknown = sorted(set(settings) - known)
        if unknown or "timm_name" not in settings:
            raise ConfigError(f"embed.external.{name}: needs `timm_name` and `weights`; allowed keys "
                              f"{sorted(known)}, unknown {unknown}")
        return cls(name=name, **settings)


def external_models(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, ExternalModel]:
    """The config's external baselines by name; a baseline with no weights file is refused up front."""
    models = {name: ExternalModel.from_config(name, value) for name, value in (settings or {}).items()}
    for name, model in models.items():
        if not model.weights:
            raise ConfigError(f"embed.external.{name}: `weights` must name a local weights file; magflow never "
                              "downloads weights (timm pretrained=False)")
    return models


def model_source(name: str, value: str | os.PathLike[str] | Mapping[str, Any]
                 ) -> str | os.PathLike[str] | ExternalModel | InitControl:
    """A run's model directory as is, a run's control (``{"init_control_of": its directory}``) as an
    :class:`InitControl`, or an external baseline's settings as an :class:`ExternalModel`."""
    if isinstance(value, Mapping) and set(value) == {CONTROL_KEY}:
        return InitControl(str(value[CONTROL_KEY]))
    return ExternalModel.from_config(name, value) if isinstance(value, Mapping) else value
