"""The linear probes a record can name: a light module (no scikit-learn, no torch), so the workflow can
check ``evaluate.probe`` and ``evaluate.mad.probe`` while it parses the config."""

from __future__ import annotations

from magflow.errors import ConfigError

PROBES = ("logistic", "paper-linear")  # magflow.evaluate.probes fits each


def check_probe(probe: str, key: str = "probe") -> str:
    """``probe`` if it names a probe, else an error naming the config ``key``."""
    if probe not in PROBES:
        raise ConfigError(f"{key}: {probe!r} is not a probe; use one of {list(PROBES)}")
    return probe
