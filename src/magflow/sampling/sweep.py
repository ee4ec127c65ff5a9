"""The sampler sweep: rows of (kernel, strategy, lam, mpp) from a TSV plus the ``samplers`` config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from magflow.defaults import default
from magflow.errors import ConfigError
from magflow.sampling.sampler import SamplerConfig
from magflow.sheet_lines import row_lines

SWEEP_COLUMNS = ("kernel", "strategy", "lam", "mpp")


def _optional_float(key: str, value: Any) -> float | None:
    """A number, or None for an empty/NA cell (pandas gives NaN or pd.NA, Paramspace 'NA')."""
    text = "" if value is None else str(value).strip()
    if text in ("", "NA", "<NA>", "nan", "NaN"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"samplers sweep: {key} must be a number or NA, got {value!r}") from None


def sampler_config(row: Mapping[str, Any], settings: Mapping[str, Any]) -> SamplerConfig:
    """The SamplerConfig of one sweep row; range, grid_step and du_mpps come from ``settings``."""
    lo, hi = settings.get("range", default("samplers.range"))
    return SamplerConfig(
        strategy=str(row["strategy"]),
        kernel=str(row["kernel"]),
        lam=_optional_float("lam", row.get("lam")),
        mpp=_optional_float("mpp", row.get("mpp")),
        lo=float(lo),
        hi=float(hi),
        grid_step=float(settings.get("grid_step", default("samplers.grid_step"))),
        du_mpps=tuple(float(m) for m in settings.get("du_mpps", default("samplers.du_mpps"))),
    )


def check_sweep(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], source: str,
                lines: Sequence[int] | None = None) -> None:
    """Validate every row before any job runs; errors name the file, the line and the fix.

    ``lines`` are the file's line numbers of ``rows`` (:func:`magflow.sheet_lines.data_lines`); without
    them row i is taken to be line i + 2, below a header on line 1.
    """
    if not rows:
        raise ConfigError(f"samplers.sweep: {source} has no rows; add at least one sampler")
    missing = [c for c in SWEEP_COLUMNS if c not in rows[0]]
    if missing:
        raise ConfigError(
            f"samplers.sweep: {source} lacks the column(s) {missing}; "
            f"the columns are {', '.join(SWEEP_COLUMNS)} (NA where unused)"
        )
    seen: dict[SamplerConfig, int] = {}
    for number, row in zip(row_lines(lines, len(rows)), rows):
        try:
            cfg = sampler_config(row, settings)
        except ConfigError as err:
            raise ConfigError(f"{source}, line {number}: {err}") from None
        if cfg in seen:
            raise ConfigError(f"{source}: line {number} repeats line {seen[cfg]}; remove one")
        seen[cfg] = number
