"""The `phantom` step: write one demo slide from the config's phantom settings and its sheet label
(`label`: the rare class; `cross_scale`: the planted cross-scale label, see ``magflow.phantom.cross``)."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from magflow.defaults import default
from magflow.errors import ConfigError

log = logging.getLogger(__name__)

# Slide sheet columns the phantom step reads besides the standard ones (the workflow keeps them).
PHANTOM_SHEET_COLUMNS = ("cross_scale",)


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


def phantom_cross_scale(slide_id: str, cross_scale: str | None, label: str | None) -> int | None:
    """The sheet's `cross_scale` (empty: none planted) and the `label` it implies: 0/1, or None."""
    if cross_scale in (None, ""):
        return None
    if cross_scale not in ("0", "1", "0.0", "1.0"):
        raise ConfigError(f"Slide '{slide_id}': a phantom slide's `cross_scale` in the slide sheet must be 0, 1 "
                          f"or empty (1 = large cells in nests and small cells in sheets, 0 = the reverse), "
                          f"got '{cross_scale}'")
    value = int(float(cross_scale))
    if label not in (None, "") and phantom_label(slide_id, label) != value:
        raise ConfigError(f"Slide '{slide_id}': `label` {label} contradicts `cross_scale` {cross_scale} in the slide "
                          "sheet: a cross-scale phantom has the rare class (large cells in nests) iff cross_scale "
                          "is 1; leave `label` empty or give it the cross_scale value")
    return value


def make_phantom(slide_id: str, label: str | None, settings: Mapping[str, Any],
                 slide_path: str | os.PathLike[str], labels_path: str | os.PathLike[str],
                 meta_path: str | os.PathLike[str], cross_scale: str | None = None) -> dict[str, Any]:
    """Write a phantom slide, its ground-truth label mask and metadata, as the config and sheet describe."""
    from magflow.phantom.slide import PhantomSpec, write_phantom

    override = dict(settings.get("per_slide", {}).get(slide_id, {}))
    seed = override.pop("seed", phantom_seed(int(settings.get("seed", default("phantom.seed"))), slide_id))
    geometry = {k: settings[k] for k in ("width_um", "height_um", "mpp", "jpeg_quality") if k in settings}
    geometry.update(override)
    planted = phantom_cross_scale(slide_id, cross_scale, label)
    spec = PhantomSpec(seed=seed, label=phantom_label(slide_id, label) if planted is None else planted,
                       cross_scale=planted, **geometry)
    log.info("%s: phantom %s", slide_id, spec)
    try:
        meta = write_phantom(spec, Path(slide_path), Path(labels_path), Path(meta_path))
    except ConfigError as error:
        raise ConfigError(f"Slide '{slide_id}': {error}") from None
    log.info("%s: wrote %s", slide_id, slide_path)
    return meta
