"""What one evaluation job knows beyond the embeddings: its settings and the slide sheet's splits and groups."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from magflow.defaults import schema_defaults
from magflow.errors import ConfigError
from magflow.evaluate.probe_names import check_probe
from magflow.evaluate.rankme import RANKME_DEFINITIONS
from magflow.evaluate.splits import SPLIT_MODES

# magflow: per-mpp probes on seeded group splits (probes.py); cms: the continuous-magnification authors' (cms.py)
PROTOCOLS = ("magflow", "cms")


@dataclass(frozen=True)
@schema_defaults("evaluate", rankme_definition="rankme.definition", coarse_mpp="hierarchy.coarse_mpp",
                 fine_mpp="hierarchy.fine_mpp", segmentation_mpp="segmentation.train_mpp")
class EvalSettings:
    """The ``evaluate`` block of the config (see config/README.md); every field's default is the config
    schema's (``evaluate``; the hierarchy's mpps, the segmentation's and the RankMe definition are nested
    there)."""

    protocol: str              # how the probes are fitted and scored, see PROTOCOLS
    probe: str                 # magflow protocol's linear probe: logistic, or paper-linear (the MAD paper's classifier)
    rankme_definition: str     # paper: singular values, uncentred; covariance: the released code's
    splits: str                # seeded: seeded slide splits; sheet: the sheet's split column; auto: seeded if possible
    seeds: tuple[int, ...]
    test_fraction: float
    val_fraction: float
    coarse_mpp: float
    fine_mpp: float
    segmentation_mpp: float

    @classmethod
    def from_config(cls, settings: Mapping[str, Any] | None) -> EvalSettings:
        values = dict(settings or {})
        hierarchy = values.pop("hierarchy", None) or {}
        segmentation = values.pop("segmentation", None) or {}
        rankme = values.pop("rankme", None) or {}
        values.pop("mad", None)  # the MAD paper's evaluation: magflow.evaluate.mad_eval.MadEvalSettings
        values.update({k: v for k, v in {"coarse_mpp": hierarchy.get("coarse_mpp"),
                                         "fine_mpp": hierarchy.get("fine_mpp"),
                                         "segmentation_mpp": segmentation.get("train_mpp"),
                                         "rankme_definition": rankme.get("definition")}.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"evaluate: unknown keys {unknown}; known: {sorted(known)}")
        if "seeds" in values:
            values["seeds"] = tuple(int(s) for s in values["seeds"])
        out = cls(**values)
        if out.splits not in SPLIT_MODES or not out.seeds or out.fine_mpp >= out.coarse_mpp:
            raise ConfigError(f"evaluate: splits must be one of {SPLIT_MODES}, seeds non-empty and fine_mpp < "
                              f"coarse_mpp; got {out}")
        check_probe(out.probe, "evaluate.probe")
        if out.protocol not in PROTOCOLS or out.rankme_definition not in RANKME_DEFINITIONS:
            raise ConfigError(f"evaluate: protocol must be one of {PROTOCOLS} and rankme.definition one of "
                              f"{RANKME_DEFINITIONS}; got {out.protocol!r}, {out.rankme_definition!r}")
        return out


@dataclass(frozen=True)
class EvalContext:
    settings: EvalSettings = field(default_factory=EvalSettings)
    sheet_splits: Mapping[str, str] = field(default_factory=dict)  # slide id → train / val / test
    groups: Mapping[str, str | None] = field(default_factory=dict)  # slide id → group (patient); None: itself
    masks: Mapping[str, str | os.PathLike[str]] = field(default_factory=dict)  # slide id → label mask PNG
    maps_dir: str | os.PathLike[str] | None = None  # where segmentation writes its label maps
    config: Mapping[str, Any] | None = None  # the run's config, recorded as provenance
