"""What magflow's training loops share: precision, the non-finite loss check, checkpoints and resume,
and the weight-decay rule of the mixing-encoder models.

The loops themselves (:mod:`magflow.pretrain.trainer`, :mod:`magflow.aggregate.pretrain_mixer`,
:mod:`magflow.aggregate.slide_eval`) stay written out top to bottom; they call these helpers.

Checkpoints are ``torch.save`` dicts written atomically. Each holds the run's identity (its settings
and data), and resuming refuses a checkpoint whose identity differs from the current run's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magflow.atomic import atomic_path
from magflow.errors import ConfigError, MagflowError

CHECKPOINT = "checkpoint.pt"

# by name, no weight decay for learned tokens and position and scale tables (MixingEncoder, MEM, CMEM, SlideModel)
NO_DECAY_NAMES = ("pos.", "cls_token", "mask_token", "scale_embed.")


class NonFiniteLossError(MagflowError):
    """A loss became NaN or infinite; the run stops before the bad step is applied."""


def check_finite(losses: Mapping[str, float], iteration: int, checkpoint: Path, settings: Mapping[str, float],
                 advice: str) -> None:
    """Raise :class:`NonFiniteLossError` if a loss is NaN or infinite, naming the iteration and every loss.

    Call it before the backward pass, so the bad step is never applied. ``settings`` (e.g. the lr) are
    named in the message, then whether ``checkpoint`` holds the last checkpoint, then ``advice``.
    """
    if all(math.isfinite(value) for value in losses.values()):
        return
    named = ", ".join(f"{name}={value:.6g}" for name, value in losses.items())
    shown = ", ".join(f"{name} {value:.3g}" for name, value in settings.items())
    last = f"{checkpoint} holds the last checkpoint" if checkpoint.is_file() else "no checkpoint was written yet"
    raise NonFiniteLossError(f"non-finite loss at iteration {iteration}: {named} ({shown}); the step was not "
                             f"applied and {last}: {advice}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` is bf16 on CUDA and fp32 elsewhere; any other setting is kept."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """The context the forward pass runs in: bf16 autocast for ``"bf16"``, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def weight_decay_exempt(name: str, param: nn.Parameter) -> bool:
    """Biases and norms (1-d), learned tokens and position and scale tables get no weight decay.

    The rule of the mixing-encoder models; DINOv2's own is :func:`magflow.pretrain.param_groups.decays`.
    """
    return param.ndim <= 1 or any(part in name for part in NO_DECAY_NAMES)


def stop_iteration(start: int, iterations: int, stop_at: int | None) -> int:
    """Where this call stops: all ``iterations``, or ``stop_at`` if earlier, and never before ``start``."""
    return max(start, iterations if stop_at is None else min(stop_at, iterations))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` under a temporary name, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_state(path: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, after checking it belongs to this run; else None."""
    if path is None or not path.is_file():
        return None
    state = load_checkpoint(path)
    check_same_run(state["identity"], identity, path)
    return state


def _plain(value: Any) -> Any:
    """JSON types only (tuples become lists), so a stored identity compares equal to a fresh one."""
    return json.loads(json.dumps(value))


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, value in _plain(identity).items():
        if isinstance(value, dict):
            flat.update({f"{section}.{key}": item for key, item in value.items()})
        else:
            flat[section] = value
    return flat


def check_same_run(stored: dict[str, Any], current: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse to resume a run whose settings differ from the checkpoint's, naming what differs."""
    old, new = _flat(stored), _flat(current)
    differ = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if differ:
        raise ConfigError(f"{Path(path)} belongs to a run with other settings (differing: {', '.join(differ)}); "
                          "resume with the same settings, or start over in a new out_dir (or delete the checkpoint)")
