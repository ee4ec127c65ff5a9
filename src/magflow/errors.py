"""Errors that tell the user which input is wrong and what to do about it."""


class MagflowError(Exception):
    """Base class: every message names the slide, file or config key at fault and the fix."""


class SlideError(MagflowError):
    """A slide cannot be opened or read (missing, corrupt, unsupported format)."""


class MissingMppError(SlideError):
    """No link of the mpp chain gave a resolution for a slide."""


class UpsamplingError(MagflowError):
    """A target mpp finer than the source was requested; magflow never upsamples silently."""


class ConfigError(MagflowError):
    """A config value or slide-sheet entry is invalid."""


class OutputError(MagflowError):
    """An output cannot be written: its folder is not writable, or its disk is full."""
