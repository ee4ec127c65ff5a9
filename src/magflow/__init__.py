"""magflow: magnification-robust pathology foundation models, from raw slides to reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("magflow")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
