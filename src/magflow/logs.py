"""Send a step's log records, and the error that ends it, to its Snakemake `log:` file."""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

log = logging.getLogger("magflow")


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    log.error("FAILED: %s", error, exc_info=(kind, error, tb))


def log_to_file(path: str | os.PathLike[str] | None, level: int = logging.INFO) -> None:
    """Configure the root logger for one step; call once at the top of a workflow script.

    An uncaught exception is written to the log file (message first, then the traceback) as well as
    to stderr, so a failed job's log always says why it failed.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
