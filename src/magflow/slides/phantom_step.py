"""The `phantom` step: write one demo slide from the config's phantom settings and its sheet label."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from magflow.errors import ConfigError

log = logging.getLogger(__name__)


def phantom_seed(base_seed: int, slide_id: str) -> int:
    """A per-slide seed that does not change when other slides are added to the sheet."""
    state = np.random.SeedSequence([base_seed, zlib.crc32(slide_id.encode())]).generate_state(1)
    return int(state[0])


def phantom_label(slide_id: str, label: str | None) -> int:
    """Phantom slide labels are 0/1: 1 means the rare class is present."""
    if label in (None, "", "0", "0.0"):
        return 0
    if label in ("1", "1.0"):
        return 1
    raise ConfigError(f"Slide '{slide_id}': a phantom slide's `label` in the slide sheet must be 0 or 1 "
                      f"(1 = the rare class is present), got '{label}'")


def make_phantom(slide_id: str, label: str | None, settings: Mapping[str, Any],
                 slide_path: str | os.PathLike[str], labels_path: str | os.PathLike[str],
                 meta_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write a phantom slide, its ground-truth label mask and metadata, as the config describes."""
    from magflow.slides.phantom import PhantomSpec, write_phantom

    override = dict(settings.get("per_slide", {}).get(slide_id, {}))
    seed = override.pop("seed", phantom_seed(int(settings.get("seed", 0)), slide_id))
    geometry = {k: settings[k] for k in ("width_um", "height_um", "mpp", "jpeg_quality") if k in settings}
    geometry.update(override)
    spec = PhantomSpec(seed=seed, label=phantom_label(slide_id, label), **geometry)
    log.info("%s: phantom %s", slide_id, spec)
    meta = write_phantom(spec, Path(slide_path), Path(labels_path), Path(meta_path))
    log.info("%s: wrote %s", slide_id, slide_path)
    return meta
