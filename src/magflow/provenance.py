"""What every result records about how it was made: config, seeds, versions, git commit, precision."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import magflow

PACKAGES = ("numpy", "scipy", "torch", "torchvision", "timm", "openslide-python", "openslide-bin",
            "h5py", "tifffile", "scikit-learn", "snakemake")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    """The commit of the magflow checkout (or of the working directory), and whether it was dirty."""
    for where in (Path(magflow.__file__).resolve().parent, Path.cwd()):
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                   capture_output=True, text=True, timeout=10).stdout.strip() != ""
            return {"commit": commit, "dirty": dirty}
        except (OSError, subprocess.SubprocessError):
            continue
    return {"commit": "unknown", "dirty": None}


def collect(config: Mapping[str, Any] | None = None, seeds: Mapping[str, int] | None = None,
            precision: str | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-ready provenance record."""
    return {
        "magflow_version": magflow.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": dict(package_versions()),
        "git": dict(git_commit()),
        "config": dict(config) if config is not None else None,
        "seeds": dict(seeds) if seeds else {},
        "precision": precision,
        **extra,
    }
