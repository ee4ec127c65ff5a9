"""Training checkpoints: written atomically, and refused on resume when the run they belong to differs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from magflow.atomic import atomic_path
from magflow.errors import ConfigError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` under a temporary name, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def plain(value: Any) -> Any:
    """JSON types only (tuples become lists), so a stored identity compares equal to a fresh one."""
    return json.loads(json.dumps(value))


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, value in plain(identity).items():
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
