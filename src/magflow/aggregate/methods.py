"""The rows of the slide-level AUROC table: which AB-MIL methods a config asks for, by id and label.

A light module (no torch), so the workflow can list the ``abmil`` jobs while it parses the config.

- ``{mixer}.{mode}``: AB-MIL on a pretrained mixing encoder (one row of ``aggregate.runs``), over its
  class tokens (``cls``) or its contextualised region tokens (``patch``), fine-tuned after a frozen
  first epoch;
- ``random.{mpp}.{mode}`` and ``random.all.{mode}``: the same on a randomly initialised mixing encoder
  (the baselines of the paper's tables, "Random 5×, 10×, 20×, all×"), applied to the tokens of one
  magnification of each region only, or to all of them;
- ``tiles.{mpp}``: AB-MIL on the frozen tile embeddings of one scale (e.g. ``tiles.2.000`` = 5×);
- ``tiles.all``: AB-MIL on the tile embeddings of every scale in one bag ("all×").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magflow.errors import ConfigError
from magflow.sheet_lines import row_lines

MODES = ("cls", "patch")
MIXER_COLUMNS = ("objective", "mask_ratio", "context")
OBJECTIVE_NAMES = {"mem": "MEM", "cmem": "CMEM"}


@dataclass(frozen=True)
class SlideMethod:
    id: str                       # the `method` wildcard
    label: str                    # the table row
    kind: str                     # "mixer", "random" or "tiles"
    mode: str                     # "cls", "patch" or "tiles"
    mixer: str | None = None      # the mixer run's name (kind "mixer")
    scales: tuple[float, ...] = ()  # "tiles": the scales in the bag; "random": the scales the mixer sees (() all)


def magnification(mpp: float) -> str:
    """The objective magnification a scale corresponds to (0.25 mpp = 40×)."""
    return f"{10.0 / mpp:g}×"


def mixer_label(row: Mapping[str, Any]) -> str:
    """A mixer run as the paper's tables name it: "MEM r=0.5", "CMEM r=0.5 c=7"."""
    objective = str(row["objective"])
    label = f"{OBJECTIVE_NAMES.get(objective, objective)} r={float(row['mask_ratio']):g}"
    return label + (f" c={int(row['context'])}" if objective == "cmem" else "")


def slide_methods(mixer_runs: Mapping[str, Mapping[str, Any]], modes: Sequence[str],
                  scales: Sequence[float]) -> dict[str, SlideMethod]:
    """Every method in table order: the mixer runs (in ``mixer_runs`` order) per mode, the random mixer
    per mode on each scale from the coarsest to the finest and on all, then the tile baselines in the
    same scale order and all×."""
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ConfigError(f"aggregate.modes: {unknown or 'empty'}; use one or both of {', '.join(MODES)}")
    methods: list[SlideMethod] = []
    for name, row in mixer_runs.items():
        methods += [SlideMethod(f"{name}.{mode}", f"{mixer_label(row)} ({mode})", "mixer", mode, mixer=name)
                    for mode in modes]
    ordered = sorted((float(s) for s in scales), reverse=True)
    for mode in modes:
        methods += [SlideMethod(f"random.{mpp:.3f}.{mode}", f"Random {magnification(mpp)} ({mode})", "random", mode,
                                scales=(mpp,)) for mpp in ordered]
        methods.append(SlideMethod(f"random.all.{mode}", f"Random all× ({mode})", "random", mode))
    methods += [SlideMethod(f"tiles.{mpp:.3f}", f"ABMIL {magnification(mpp)} ({mpp:g} mpp)", "tiles", "tiles",
                            scales=(mpp,)) for mpp in ordered]
    methods.append(SlideMethod("tiles.all", "ABMIL all×", "tiles", "tiles", scales=tuple(ordered)))
    return {m.id: m for m in methods}


def check_mixer_runs(runs: Mapping[str, Mapping[str, Any]], source: str,
                     lines: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """The mixer sweep's rows by run name, typed: objective, mask_ratio (0 < r < 1), context (c, an integer;
    only CMEM uses it). A bad row is refused with its line in ``source``: ``lines`` are the rows' line
    numbers (:func:`magflow.sheet_lines.data_lines`; without them row i is line i + 2)."""
    if not runs:
        raise ConfigError(f"aggregate.runs: {source} has no rows; add at least one (objective, mask_ratio, context)")
    typed = {}
    for number, (name, row) in zip(row_lines(lines, len(runs)), runs.items()):
        where = f"aggregate.runs: {source}, line {number}"
        objective = str(row["objective"])
        if objective not in OBJECTIVE_NAMES:
            raise ConfigError(f"{where}: objective {objective!r} must be one of {', '.join(OBJECTIVE_NAMES)}")
        try:
            ratio, context = float(row["mask_ratio"]), int(row["context"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: mask_ratio must be a number and context an integer (CMEM's c; any integer "
                              f"for MEM), got {row['mask_ratio']!r}, {row['context']!r}") from None
        if not 0 < ratio < 1 or context < 1:
            raise ConfigError(f"{where}: need 0 < mask_ratio < 1 and context >= 1, got {ratio:g}, {context}")
        typed[name] = {"objective": objective, "mask_ratio": ratio, "context": context}
    return typed
