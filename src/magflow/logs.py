"""Send a step's log records to its Snakemake `log:` file (and to stderr)."""

from __future__ import annotations

import logging
import os


def log_to_file(path: str | os.PathLike[str] | None, level: int = logging.INFO) -> None:
    """Configure the root logger for one step; call once at the top of a workflow script."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)
