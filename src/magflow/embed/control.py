"""The control of a pretraining run: the same network at initialisation, with the same seed.

Every RankMe and probe profile is drawn beside its control, so an effect of the view pipeline (which
an untrained network shows too) is never mistaken for an effect of training. The control of run
``R`` is the model ``R~init`` (``~`` never ends a run name, and a run directory holds no ``~init``).

It is rebuilt at embed time from the run's ``model_card.json``, which holds the run's whole
``TrainConfig`` (with its seed) and whether iBOT was on, by the trainer's own
:func:`~magflow.pretrain.trainer.initial_model`: the student the trainer built before iteration 0,
which the EMA teacher starts as a copy of. So training exports nothing extra, and the control is
exactly the initialisation of the run's own config. This module needs no torch until a control is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magflow.errors import ConfigError

if TYPE_CHECKING:
    from magflow.embed.encoder import Encoder

CONTROL_SUFFIX = "~init"
CONTROL_KEY = "init_control_of"  # the workflow names a control as {CONTROL_KEY: the run's directory}


def control_name(run: str) -> str:
    return f"{run}{CONTROL_SUFFIX}"


def control_of(model: str) -> str | None:
    """The run whose control ``model`` is, or None."""
    return model[: -len(CONTROL_SUFFIX)] if model.endswith(CONTROL_SUFFIX) else None


@dataclass(frozen=True)
class InitControl:
    """A run's network at initialisation; ``model_dir`` is the trained run's directory (its model card)."""

    model_dir: str


def load_control_encoder(control: InitControl, mean_patch: bool = False, name: str | None = None) -> Encoder:
    """The run's backbone as the trainer initialised it, as an eval-mode :class:`Encoder`."""
    from magflow.embed.encoder import Encoder
    from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from magflow.pretrain.export import CARD, tensors_sha256
    from magflow.pretrain.train_config import TrainConfig
    from magflow.pretrain.trainer import initial_model

    model_dir = Path(control.model_dir)
    card_path = model_dir / CARD
    if not card_path.is_file():
        raise ConfigError(f"init control of {model_dir}: needs its {CARD} (written when pretraining finishes)")
    card = json.loads(card_path.read_text())
    training = card.get("training") or {}
    if "config" not in training:
        raise ConfigError(f"{card_path}: no training.config, so the run's initialisation cannot be rebuilt")
    try:
        config = TrainConfig.from_dict(training["config"])
    except ConfigError as error:
        raise ConfigError(f"{card_path}: its training config no longer builds ({error})") from None
    backbone = initial_model(config, training.get("ibot")).backbone
    norm = (card.get("architecture") or {}).get("input") or {}
    return Encoder(backbone, norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD), mean_patch,
                   control_card(card, model_dir.name, tensors_sha256(backbone.vit.state_dict())),
                   name or control_name(model_dir.name))


def control_card(card: dict[str, Any], run: str, digest: str) -> dict[str, Any]:
    """The model card of a run's control: what it is, and the run's architecture, seed and training config."""
    return {"model": control_name(run), "control": {"of": run, "weights": "initialisation (iteration 0)",
                                                    "built_by": "magflow.pretrain.trainer.initial_model",
                                                    "tensors_sha256": digest},
            "architecture": card.get("architecture"), "seed": card.get("seed"), "iterations": 0,
            "commit": card.get("commit"), "training": card.get("training")}
